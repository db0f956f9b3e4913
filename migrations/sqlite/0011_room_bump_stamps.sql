-- Recency of each room for sliding sync's ordering: the stream position of the room's newest
-- event of a "bump" type (messages, not every state change or reaction). Kept in the same
-- transaction as the event (rooms::persist), so sorting 1,000 rooms is one indexed read.
CREATE TABLE room_bump_stamps (
    room_id        TEXT PRIMARY KEY,
    stream_ordering INTEGER NOT NULL
);
INSERT INTO room_bump_stamps (room_id, stream_ordering)
    SELECT room_id, MAX(stream_ordering) FROM events
    WHERE stream_ordering > 0 AND event_type IN
        ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker', 'm.call.invite', 'm.poll.start', 'm.beacon_info')
    GROUP BY room_id;
