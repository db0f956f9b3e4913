-- Invites from other servers to rooms this server is not in: the stripped state shown to
-- the invitee (the invite event itself is kept in the timeline table, outside any state).

CREATE TABLE invite_states (
    room_id        TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    stripped_state TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
