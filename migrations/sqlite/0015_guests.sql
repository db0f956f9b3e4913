-- Guest accounts (registration kind=guest): no password, a restricted set of endpoints,
-- upgradable in place to a full account.
ALTER TABLE users ADD COLUMN is_guest INTEGER NOT NULL DEFAULT 0;
