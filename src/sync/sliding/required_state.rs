//! `required_state`: which state events of a room a sliding sync response carries.
//! Entries are (type, state key) with `*` wildcards for either, `$ME` for the requester's
//! own id as a key, and `$LAZY` as the member key meaning "the senders of the timeline".

use std::collections::{BTreeSet, HashSet};

use ruma::events::StateEventType;

const WILDCARD: &str = "*";
const LAZY: &str = "$LAZY";
const ME: &str = "$ME";
const MEMBER: &str = "m.room.member";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredState {
    /// `["*", "*"]`: every state event.
    all: bool,
    /// `[type, "*"]`: every key of these types.
    whole_types: BTreeSet<String>,
    /// `["*", key]`: this key of any type.
    any_type_keys: BTreeSet<String>,
    /// `[type, key]`, with `$ME` already replaced.
    exact: BTreeSet<(String, String)>,
    /// `["m.room.member", "$LAZY"]`.
    lazy_members: bool,
}

impl RequiredState {
    pub fn new(entries: &[(StateEventType, String)], me: &str) -> Self {
        let mut required = Self::default();
        required.add(entries, me);
        required
    }

    /// Merges more entries in (a room in several lists gets the union).
    pub fn add(&mut self, entries: &[(StateEventType, String)], me: &str) {
        for (kind, key) in entries {
            let kind = kind.to_string();
            let key = if key == ME { me.to_owned() } else { key.clone() };
            match (kind.as_str(), key.as_str()) {
                (WILDCARD, WILDCARD) => self.all = true,
                (MEMBER, LAZY) => self.lazy_members = true,
                (WILDCARD, _) => {
                    self.any_type_keys.insert(key);
                }
                (_, WILDCARD) => {
                    self.whole_types.insert(kind);
                }
                _ => {
                    self.exact.insert((kind, key));
                }
            }
        }
    }

    pub fn merge(&mut self, other: &RequiredState) {
        self.all |= other.all;
        self.lazy_members |= other.lazy_members;
        self.whole_types.extend(other.whole_types.iter().cloned());
        self.any_type_keys.extend(other.any_type_keys.iter().cloned());
        self.exact.extend(other.exact.iter().cloned());
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn lazy_members(&self) -> bool {
        self.lazy_members
    }

    /// What to read from the current state index: (every key of these types, these exact
    /// pairs), or None when only a full read can answer (`*` types).
    pub fn lookup(&self, timeline_senders: &HashSet<String>) -> Option<(Vec<String>, Vec<(String, String)>)> {
        if self.all || !self.any_type_keys.is_empty() {
            return None;
        }
        let mut exact: Vec<(String, String)> = self.exact.iter().cloned().collect();
        if self.lazy_members {
            exact.extend(timeline_senders.iter().map(|sender| (MEMBER.to_owned(), sender.clone())));
        }
        Some((self.whole_types.iter().cloned().collect(), exact))
    }

    /// Whether the state event (kind, key) is asked for; `timeline_senders` are the lazy
    /// members wanted.
    pub fn matches(&self, kind: &str, key: &str, timeline_senders: &HashSet<String>) -> bool {
        self.all
            || self.whole_types.contains(kind)
            || self.any_type_keys.contains(key)
            || self.exact.contains(&(kind.to_owned(), key.to_owned()))
            || (self.lazy_members && kind == MEMBER && timeline_senders.contains(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[(&str, &str)]) -> Vec<(StateEventType, String)> {
        list.iter().map(|(t, k)| (StateEventType::from(*t), (*k).to_owned())).collect()
    }

    #[test]
    fn wildcards_me_and_lazy() {
        let none = HashSet::new();
        let senders: HashSet<String> = ["@b:x".to_owned()].into();
        let required = RequiredState::new(
            &entries(&[("m.room.name", ""), ("m.room.member", "$ME"), ("m.room.member", "$LAZY"), ("m.space.child", "*")]),
            "@a:x",
        );
        assert!(required.matches("m.room.name", "", &none));
        assert!(!required.matches("m.room.topic", "", &none));
        assert!(required.matches("m.room.member", "@a:x", &none));
        assert!(!required.matches("m.room.member", "@b:x", &none));
        assert!(required.matches("m.room.member", "@b:x", &senders));
        assert!(required.matches("m.space.child", "!any:x", &none));
        let everything = RequiredState::new(&entries(&[("*", "*")]), "@a:x");
        assert!(everything.matches("m.room.topic", "", &none));
        let any_type = RequiredState::new(&entries(&[("*", "")]), "@a:x");
        assert!(any_type.matches("m.room.topic", "", &none));
        assert!(!any_type.matches("m.room.member", "@a:x", &none));
    }

    #[test]
    fn merged_is_the_union() {
        let none = HashSet::new();
        let mut a = RequiredState::new(&entries(&[("m.room.name", "")]), "@a:x");
        a.merge(&RequiredState::new(&entries(&[("m.room.topic", "")]), "@a:x"));
        assert!(a.matches("m.room.name", "", &none) && a.matches("m.room.topic", "", &none));
        assert!(!RequiredState::default().matches("m.room.name", "", &none));
    }
}
