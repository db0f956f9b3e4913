-- The user directory: one profile per user (local users: their global profile; remote users:
-- the display name and avatar of their latest join seen), with search_key the user id and
-- display name folded (lower case, no diacritics) by weft for matching.
CREATE TABLE user_directory (
    user_id        TEXT PRIMARY KEY,
    display_name   TEXT,
    avatar_url     TEXT,
    search_key     TEXT NOT NULL
);

-- The join rule of each room's current state, kept with it: public rooms' members are in
-- everyone's directory.
CREATE TABLE room_join_rules (
    room_id        TEXT PRIMARY KEY,
    join_rule      TEXT NOT NULL
);
CREATE INDEX room_join_rules_rule ON room_join_rules (join_rule);

-- Existing data (ASCII case folding only; later updates fold fully).
INSERT INTO user_directory (user_id, display_name, avatar_url, search_key)
    SELECT user_id, displayname, avatar_url, lower(user_id || ' ' || COALESCE(displayname, ''))
    FROM users WHERE deactivated = 0 AND is_guest = 0;
INSERT OR IGNORE INTO user_directory (user_id, display_name, avatar_url, search_key)
    SELECT m.user_id, json_extract(e.json, '$.content.displayname'), json_extract(e.json, '$.content.avatar_url'),
           lower(m.user_id || ' ' || COALESCE(json_extract(e.json, '$.content.displayname'), ''))
    FROM room_memberships m JOIN events e ON e.event_id = m.event_id WHERE m.membership = 'join';
INSERT OR IGNORE INTO room_join_rules (room_id, join_rule)
    SELECT c.room_id, json_extract(e.json, '$.content.join_rule')
    FROM current_state c JOIN events e ON e.event_id = c.event_id
    WHERE c.event_type = 'm.room.join_rules' AND c.state_key = '' AND json_extract(e.json, '$.content.join_rule') IS NOT NULL;
