-- World-readable rooms count as public for the user directory (as in Synapse), whatever
-- their join rule.
ALTER TABLE room_join_rules ADD COLUMN world_readable INTEGER NOT NULL DEFAULT 0;
INSERT OR IGNORE INTO room_join_rules (room_id, join_rule)
    SELECT c.room_id, 'invite' FROM current_state c
    WHERE c.event_type = 'm.room.history_visibility' AND c.state_key = '';
UPDATE room_join_rules SET world_readable = 1 WHERE room_id IN (
    SELECT c.room_id FROM current_state c JOIN events e ON e.event_id = c.event_id
    WHERE c.event_type = 'm.room.history_visibility' AND c.state_key = ''
      AND json_extract(e.json, '$.content.history_visibility') = 'world_readable');
