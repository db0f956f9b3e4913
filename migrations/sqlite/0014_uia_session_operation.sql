-- What a user-interactive-auth session was started for (e.g. deleting one device): completing
-- its stages for another operation is refused, as the spec requires.
ALTER TABLE uia_sessions ADD COLUMN operation TEXT NOT NULL DEFAULT '';
