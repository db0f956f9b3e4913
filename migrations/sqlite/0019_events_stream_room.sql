-- Search joins every index match to its event's room: this covering index answers that
-- from narrow pages instead of the wide event rows.
CREATE INDEX events_stream_room ON events (stream_ordering, room_id);
