//! Server-side search of room history (`POST /search`, `room_events`): what gets indexed,
//! how a search term becomes an index query, and which matches a user may see.
//!
//! Tokenizer: on SQLite, FTS5 `unicode61`; on PostgreSQL, `to_tsvector('simple', ...)`, each
//! key weighted (body A, name B, topic C). Either splits words at spaces and punctuation and
//! is fed text that weft folded first (lower case, NFKD without marks, in every script:
//! FTS5 alone drops the marks of Latin letters only). Scripts written without spaces
//! (Chinese, Japanese, Korean) are split here into one token per character, at indexing and
//! at query time alike, so a CJK word is searched as the phrase of its characters.

use std::collections::{BTreeMap, HashMap};

use ruma::{api::client::filter::RoomEventFilter, RoomId};
use serde_json::Value;

use super::{
    pdu_from_row,
    read::{encode_token, filter_allows, Viewer},
    visibility::VisibilityChecker,
    Pdu, Rooms,
};
use crate::{
    error::{MatrixError, Result},
    storage::{
        events::{Boundary, Direction, EventRow},
        rooms as room_repo,
        search::{self as search_repo, Cursor, SearchDocument},
        state as state_repo,
    },
};

/// The keys a search may look in (the spec's `keys`), as columns of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKey {
    Body,
    Name,
    Topic,
}

impl SearchKey {
    fn column(self) -> &'static str {
        match self {
            SearchKey::Body => "body",
            SearchKey::Name => "name",
            SearchKey::Topic => "topic",
        }
    }

    /// The key's weight in PostgreSQL's index (each key's text is weighted by its column).
    fn weight(self) -> char {
        match self {
            SearchKey::Body => 'A',
            SearchKey::Name => 'B',
            SearchKey::Topic => 'C',
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    Rank,
    Recent,
}

/// One `room_events` search.
pub struct SearchRequest<'a> {
    pub term: &'a str,
    pub keys: Vec<SearchKey>,
    pub filter: &'a RoomEventFilter,
    pub order: SearchOrder,
    /// Events before and after each result, and whether to add the senders' profiles.
    pub context: Option<(usize, usize, bool)>,
    pub include_state: bool,
    pub next_batch: Option<&'a str>,
}

pub struct HitContext {
    pub before: Vec<Value>,
    pub after: Vec<Value>,
    pub start: String,
    pub end: String,
    /// Sender → (display name, avatar URL) at the result.
    pub profiles: BTreeMap<String, (Option<String>, Option<String>)>,
}

pub struct SearchHit {
    pub rank: f64,
    pub event: Value,
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub context: Option<HitContext>,
}

pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    pub count: i64,
    pub highlights: Vec<String>,
    pub next_batch: Option<String>,
    /// Current state of the rooms with results (`include_state`).
    pub state: BTreeMap<String, Vec<Value>>,
}

/// Default and largest number of results per page (Synapse's default is 10).
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

/// A character of a script written without spaces between words.
fn is_unspaced_script(c: char) -> bool {
    matches!(c as u32,
        0x2E80..=0x2FDF      // CJK radicals
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x3100..=0x312F    // Bopomofo
        | 0x3130..=0x318F    // Hangul compatibility jamo
        | 0x31F0..=0x31FF    // Katakana extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x20000..=0x3134F) // CJK extensions B–G
}

/// Text as it goes to the tokenizer: folded (`crate::text::fold`: unicode61 only drops the
/// marks of Latin letters), characters of unspaced scripts standing alone.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in crate::text::fold(text).chars() {
        if is_unspaced_script(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// What of an event is searchable: the body of messages, the name and topic of rooms.
pub fn document(pdu: &Pdu) -> Option<SearchDocument> {
    let kind = pdu.kind().to_string();
    let (field, is_state) = match kind.as_str() {
        "m.room.message" => ("body", false),
        "m.room.name" => ("name", true),
        "m.room.topic" => ("topic", true),
        _ => return None,
    };
    if is_state && pdu.state_key() != Some("") {
        return None;
    }
    let content = pdu.content_value();
    let text = content.get(field)?.as_str().filter(|t| !t.trim().is_empty())?;
    let text = Some(segment(text));
    Some(match field {
        "body" => SearchDocument { body: text, ..Default::default() },
        "name" => SearchDocument { name: text, ..Default::default() },
        _ => SearchDocument { topic: text, ..Default::default() },
    })
}

/// A search term made ready for the index.
#[derive(Debug, PartialEq)]
pub struct ParsedQuery {
    /// The FTS5 query (SQLite).
    pub fts: String,
    /// The same query as a `tsquery` (PostgreSQL).
    pub tsquery: String,
    /// The words to highlight (lower case, as typed).
    pub highlights: Vec<String>,
    /// Per alternative (`OR`), the index tokens it needs (token, is a prefix): for
    /// estimating how many events match.
    pub tokens: Vec<Vec<(String, bool)>>,
}

/// A search term as an FTS5 query and a PostgreSQL `tsquery`, with the words to highlight. Syntax as web search
/// engines (and Synapse) take it: words must all match, `"quoted words"` as a phrase,
/// `-word` must not match, `OR` between alternatives, a trailing `*` matches a prefix.
/// None when nothing positive is left to search for.
pub fn parse_query(term: &str, keys: &[SearchKey]) -> Option<ParsedQuery> {
    let mut alternatives: Vec<String> = Vec::new();
    let mut alternative_tokens: Vec<Vec<(String, bool)>> = Vec::new();
    let mut positive: Vec<String> = Vec::new();
    let mut tokens: Vec<(String, bool)> = Vec::new();
    let mut negative: Vec<String> = Vec::new();
    let mut highlights: Vec<String> = Vec::new();
    // The tsquery form, built beside the FTS5 one: each phrase is its tokens in sequence
    // (`<->`), limited to the searched keys' weights.
    let weights: String = if keys.is_empty() || keys.len() == 3 { String::new() } else { keys.iter().map(|k| k.weight()).collect() };
    let mut ts_alternatives: Vec<String> = Vec::new();
    let mut ts_positive: Vec<String> = Vec::new();
    let mut ts_negative: Vec<String> = Vec::new();
    let finish = |positive: &mut Vec<String>, negative: &mut Vec<String>, tokens: &mut Vec<(String, bool)>, alternatives: &mut Vec<String>, alternative_tokens: &mut Vec<Vec<(String, bool)>>| {
        if !positive.is_empty() {
            let mut group = format!("({})", positive.join(" AND "));
            for term in negative.iter() {
                group = format!("({group} NOT {term})");
            }
            alternatives.push(group);
            alternative_tokens.push(std::mem::take(tokens));
        }
        positive.clear();
        negative.clear();
        tokens.clear();
    };
    let ts_finish = |positive: &mut Vec<String>, negative: &mut Vec<String>, alternatives: &mut Vec<String>| {
        if !positive.is_empty() {
            let mut group = format!("({})", positive.join(" & "));
            for term in negative.iter() {
                group = format!("({group} & !{term})");
            }
            alternatives.push(group);
        }
        positive.clear();
        negative.clear();
    };
    let mut rest = term;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let negated = rest.starts_with('-');
        if negated {
            rest = &rest[1..];
        }
        let (word, quoted) = if let Some(inner) = rest.strip_prefix('"') {
            let end = inner.find('"').unwrap_or(inner.len());
            let word = &inner[..end];
            rest = inner.get(end + 1..).unwrap_or("");
            (word, true)
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            (word, false)
        };
        if !quoted && !negated && word == "OR" {
            finish(&mut positive, &mut negative, &mut tokens, &mut alternatives, &mut alternative_tokens);
            ts_finish(&mut ts_positive, &mut ts_negative, &mut ts_alternatives);
            continue;
        }
        let (word, prefix) = match word.strip_suffix('*') {
            Some(stem) if !quoted => (stem, true),
            _ => (word, false),
        };
        // Only words the tokenizer keeps: punctuation alone matches nothing.
        if !word.chars().any(char::is_alphanumeric) {
            continue;
        }
        let segmented = segment(word);
        let phrase = format!("\"{}\"{}", segmented.replace('"', "\"\""), if prefix { "*" } else { "" });
        let pieces: Vec<&str> = segmented.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).collect();
        let last = pieces.len().saturating_sub(1);
        // Pieces are alphanumeric: nothing in them can break out of the quotes.
        let ts_phrase = pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let star = if prefix && i == last { "*" } else { "" };
                let suffix = if star.is_empty() && weights.is_empty() { String::new() } else { format!(":{star}{weights}") };
                format!("'{piece}'{suffix}")
            })
            .collect::<Vec<_>>()
            .join(" <-> ");
        let ts_phrase = format!("({ts_phrase})");
        if negated {
            negative.push(phrase);
            ts_negative.push(ts_phrase);
        } else {
            positive.push(phrase);
            ts_positive.push(ts_phrase);
            tokens.extend(pieces.iter().enumerate().map(|(i, t)| ((*t).to_owned(), prefix && i == last)));
            highlights.extend(word.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase));
        }
    }
    finish(&mut positive, &mut negative, &mut tokens, &mut alternatives, &mut alternative_tokens);
    ts_finish(&mut ts_positive, &mut ts_negative, &mut ts_alternatives);
    if alternatives.is_empty() {
        return None;
    }
    let expression = alternatives.join(" OR ");
    let columns: Vec<&str> = if keys.is_empty() {
        vec!["body", "name", "topic"]
    } else {
        keys.iter().map(|k| k.column()).collect()
    };
    highlights.sort();
    highlights.dedup();
    Some(ParsedQuery {
        fts: format!("{{{}}} : ({expression})", columns.join(" ")),
        tsquery: ts_alternatives.join(" | "),
        highlights,
        tokens: alternative_tokens,
    })
}

fn parse_next_batch(token: &str, order: SearchOrder) -> Result<Cursor> {
    let bad = || MatrixError::invalid_param("Invalid next_batch token");
    match (order, token.split_at_checked(1)) {
        (SearchOrder::Rank, Some(("r", offset))) => Ok(Cursor::Rank { offset: offset.parse().map_err(|_| bad())? }),
        (SearchOrder::Recent, Some(("s", before))) => Ok(Cursor::Recent { before: Some(before.parse().map_err(|_| bad())?) }),
        _ => Err(bad()),
    }
}

impl Rooms {
    /// A page of the events matching a search in the rooms `user` is joined to, that the
    /// user may see (history visibility at each event; erased senders are never found).
    pub async fn search_events(&self, viewer: Viewer<'_>, request: SearchRequest<'_>) -> Result<SearchPage> {
        let user = viewer.user_id;
        let filter = request.filter;
        let limit = filter.limit.map(|l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT)).unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let mut room_ids = room_repo::rooms_with_membership(self.db.pool(), user.as_str(), "join").await?;
        if let Some(wanted) = &filter.rooms {
            room_ids.retain(|room| wanted.iter().any(|w| w.as_str() == room));
        }
        room_ids.retain(|room| !filter.not_rooms.iter().any(|r| r.as_str() == room));

        let Some(ParsedQuery { fts, tsquery, highlights, tokens }) = parse_query(request.term, &request.keys) else {
            return Ok(SearchPage { hits: Vec::new(), count: 0, highlights: Vec::new(), next_batch: None, state: BTreeMap::new() });
        };
        let mut cursor = match request.next_batch {
            Some(token) => parse_next_batch(token, request.order)?,
            None if request.order == SearchOrder::Rank => Cursor::Rank { offset: 0 },
            None => Cursor::Recent { before: None },
        };
        let index_query = search_repo::IndexQuery { fts5: &fts, tsquery: &tsquery };
        let count = search_repo::count(&self.db, index_query, &tokens, &room_ids).await?;

        // Matches come in windows; those the filter or visibility hide are skipped, and the
        // next window starts after the last match looked at.
        let window = (limit * 2) as i64;
        let mut checkers: HashMap<String, VisibilityChecker<'_>> = HashMap::new();
        let mut picked: Vec<(EventRow, Pdu, f64)> = Vec::new();
        let mut next_batch = None;
        'windows: for _ in 0..5 {
            let matches = search_repo::search(&self.db, index_query, &room_ids, cursor, window).await?;
            let exhausted = (matches.len() as i64) < window;
            for (row, score) in matches {
                cursor = match cursor {
                    Cursor::Rank { offset } => Cursor::Rank { offset: offset + 1 },
                    Cursor::Recent { .. } => Cursor::Recent { before: Some(row.stream_ordering) },
                };
                let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
                if !filter_allows(filter, &pdu) || self.is_erased(pdu.fields.sender.as_str()).await? {
                    continue;
                }
                let checker = checkers.entry(row.room_id.clone()).or_insert_with(|| VisibilityChecker::new(self, user, true));
                if !checker.can_see(&row, &pdu).await? {
                    continue;
                }
                picked.push((row, pdu, score));
                if picked.len() == limit {
                    next_batch = Some(cursor);
                    break 'windows;
                }
            }
            if exhausted {
                next_batch = None;
                break;
            }
            next_batch = Some(cursor);
        }
        let next_batch = next_batch.map(|cursor| match cursor {
            Cursor::Rank { offset } => format!("r{offset}"),
            Cursor::Recent { before } => format!("s{}", before.unwrap_or(i64::MAX)),
        });

        let ranks: Vec<f64> = picked.iter().map(|(_, _, rank)| *rank).collect();
        let items: Vec<(EventRow, Pdu)> = picked.into_iter().map(|(row, pdu, _)| (row, pdu)).collect();
        // Client form for the whole page at once (one query for bundled relations).
        let events = self.client_events(&items, Some(viewer)).await?;
        let mut hits = Vec::with_capacity(items.len());
        for (((row, pdu), event), rank) in items.iter().zip(events).zip(ranks) {
            let context = match request.context {
                Some((before, after, profiles)) => Some(self.search_context(viewer, row, pdu, before, after, profiles).await?),
                None => None,
            };
            hits.push(SearchHit {
                rank,
                event,
                event_id: row.event_id.clone(),
                room_id: row.room_id.clone(),
                sender: pdu.fields.sender.to_string(),
                context,
            });
        }

        let mut state = BTreeMap::new();
        if request.include_state {
            for room_id in hits.iter().map(|h| h.room_id.clone()).collect::<std::collections::BTreeSet<_>>() {
                let room = RoomId::parse(&room_id)?;
                state.insert(room_id, self.current_state_events(&room, viewer).await?);
            }
        }
        Ok(SearchPage { hits, count, highlights, next_batch, state })
    }

    /// The visible events around a search result, and its senders' profiles at it.
    async fn search_context(&self, viewer: Viewer<'_>, row: &EventRow, pdu: &Pdu, before: usize, after: usize, profiles: bool) -> Result<HitContext> {
        let room_id = &pdu.room_id;
        let here = Boundary::Topological { depth: row.depth, stream: row.stream_ordering };
        let all = RoomEventFilter::default();
        let (before_events, start) = if before > 0 {
            let page = self.history(room_id, viewer, here, None, Direction::Backward, before, &all).await?;
            (page.events, page.end)
        } else {
            (Vec::new(), None)
        };
        let (after_events, end) = if after > 0 {
            let page = self.history(room_id, viewer, here, None, Direction::Forward, after, &all).await?;
            (page.events, page.end)
        } else {
            (Vec::new(), None)
        };
        let mut senders: std::collections::BTreeSet<String> = [pdu.fields.sender.to_string()].into();
        if profiles {
            for event in before_events.iter().chain(&after_events) {
                if let Some(sender) = event["sender"].as_str() {
                    senders.insert(sender.to_owned());
                }
            }
        }
        let mut profile_map = BTreeMap::new();
        if profiles {
            for sender in senders {
                let Some(member_id) = self.lookup_in_group(row.state_group, "m.room.member", &sender).await? else { continue };
                let Some(json) = self.event_json(&member_id).await? else { continue };
                let member: Value = serde_json::from_str(&json)?;
                let content = &member["content"];
                profile_map.insert(
                    sender,
                    (content["displayname"].as_str().map(str::to_owned), content["avatar_url"].as_str().map(str::to_owned)),
                );
            }
        }
        let token = encode_token(row);
        Ok(HitContext {
            before: before_events,
            after: after_events,
            start: start.unwrap_or_else(|| token.clone()),
            end: end.unwrap_or(token),
            profiles: profile_map,
        })
    }

    /// The room's current state in client form.
    async fn current_state_events(&self, room_id: &RoomId, viewer: Viewer<'_>) -> Result<Vec<Value>> {
        let state = state_repo::current_state(self.db.pool(), room_id.as_str()).await?;
        let ids: Vec<String> = state.into_values().collect();
        let mut events = Vec::with_capacity(ids.len());
        for row in crate::storage::events::get_many(self.db.pool(), &ids).await? {
            let pdu = pdu_from_row(&row.event_id, &row.room_id, &row.json)?;
            events.push(self.client_event_plain(&row, &pdu, Some(viewer)).await?);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_query, segment, SearchKey};

    #[test]
    fn unspaced_scripts_become_one_token_per_character() {
        assert_eq!(segment("東京タワー ok"), " 東  京  タ  ワ  ー  ok");
        assert_eq!(segment("Plain Téxt"), "plain text");
    }

    #[test]
    fn search_terms_become_fts5_queries() {
        let query = parse_query("hello World", &[]).unwrap();
        assert_eq!(query.fts, r#"{body name topic} : (("hello" AND "world"))"#);
        assert_eq!(query.tsquery, "(('hello') & ('world'))");
        assert_eq!(query.highlights, vec!["hello", "world"]);
        assert_eq!(query.tokens, vec![vec![("hello".to_owned(), false), ("world".to_owned(), false)]]);

        let query = parse_query(r#""big cat" -dog OR mouse*"#, &[SearchKey::Body]).unwrap();
        assert_eq!(query.fts, r#"{body} : ((("big cat") NOT "dog") OR ("mouse"*))"#);
        assert_eq!(query.tsquery, "((('big':A <-> 'cat':A)) & !('dog':A)) | (('mouse':*A))");
        assert_eq!(query.tokens, vec![vec![("big".to_owned(), false), ("cat".to_owned(), false)], vec![("mouse".to_owned(), true)]]);

        // Quotes inside words cannot break out of the phrase; punctuation alone is dropped.
        let query = parse_query(r#"a"b !!"#, &[SearchKey::Name, SearchKey::Topic]).unwrap();
        assert_eq!(query.fts, r#"{name topic} : (("a""b"))"#);
        assert_eq!(query.tsquery, "(('a':BC <-> 'b':BC))");
        assert_eq!(parse_query("東京", &[]).unwrap().tokens, vec![vec![("東".to_owned(), false), ("京".to_owned(), false)]]);

        assert!(parse_query("-only -negative", &[]).is_none());
        assert!(parse_query("   ", &[]).is_none());
        assert!(parse_query("?!", &[]).is_none());
    }
}
