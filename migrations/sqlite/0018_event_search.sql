-- Full-text index of message bodies, room names and topics (`POST /search`), rowid = the
-- event's stream_ordering. Contentless: the text lives in `events` only; rows are deleted
-- when their event is redacted. weft folds the text first (lower case, no marks, in every
-- script) and splits CJK text into one token per character; unicode61 splits words.
CREATE VIRTUAL TABLE event_search USING fts5(
    body, name, topic,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);

-- Existing events (folded by unicode61 alone, Latin marks only, no CJK split; new events
-- get the full folding).
INSERT INTO event_search (rowid, body, name, topic)
    SELECT stream_ordering,
           CASE WHEN event_type = 'm.room.message' THEN json_extract(json, '$.content.body') END,
           CASE WHEN event_type = 'm.room.name' THEN json_extract(json, '$.content.name') END,
           CASE WHEN event_type = 'm.room.topic' THEN json_extract(json, '$.content.topic') END
    FROM events
    WHERE redacted_by IS NULL AND (
        (event_type = 'm.room.message' AND json_type(json, '$.content.body') = 'text') OR
        (event_type = 'm.room.name' AND state_key = '' AND json_type(json, '$.content.name') = 'text') OR
        (event_type = 'm.room.topic' AND state_key = '' AND json_type(json, '$.content.topic') = 'text'));

-- How many events each token is in: search estimates its `count` from it when a query has
-- too many matches to count.
CREATE VIRTUAL TABLE event_search_vocab USING fts5vocab(event_search, 'row');
