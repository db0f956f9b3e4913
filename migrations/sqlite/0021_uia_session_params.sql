-- A registration's parameters, kept with its user-interactive-auth session (as Synapse keeps
-- them): later requests of the session may leave them out, the password is stored only as
-- its hash, and once the session has registered a user its id is kept, so that a retried
-- request is answered for that user instead of failing with M_USER_IN_USE.
ALTER TABLE uia_sessions ADD COLUMN params TEXT NOT NULL DEFAULT '{}';
