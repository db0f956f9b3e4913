-- Account moderation (spec: "Account locking", "Account suspension"): a locked account can
-- do nothing but log out; a suspended one can read but not act. Both reversible.
ALTER TABLE users ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
