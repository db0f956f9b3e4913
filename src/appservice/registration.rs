//! Registration files: Synapse's YAML format (the spec's registration fields plus the
//! MSC2409 spelling of `receive_ephemeral`), read and checked once at start-up.

use std::path::{Path, PathBuf};

use regex::Regex;
use ruma::{api::appservice::Registration, OwnedUserId, ServerName, UserId};
use serde::Deserialize;

/// A namespace's pattern, compiled.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub exclusive: bool,
    pub regex: Regex,
}

impl Pattern {
    /// Matches from the start of the value, as Synapse's `re.match` does: bridges write
    /// `@irc_.*` and mean names that begin so.
    pub fn matches(&self, value: &str) -> bool {
        self.regex.find(value).is_some_and(|found| found.start() == 0)
    }
}

/// One application service, as its registration file declares it.
#[derive(Debug)]
pub struct AppService {
    pub registration: Registration,
    /// The service's own user (`sender_localpart` on this server).
    pub sender: OwnedUserId,
    pub users: Vec<Pattern>,
    pub aliases: Vec<Pattern>,
    pub rooms: Vec<Pattern>,
    /// Typing, receipts, presence and its users' to-device messages pushed in its
    /// transactions (`receive_ephemeral`, MSC2409).
    pub receive_ephemeral: bool,
    /// Device-list changes and its users' one-time-key counts in its transactions
    /// (`org.matrix.msc3202: true`), for end-to-bridge encryption.
    pub device_lists: bool,
    /// Where the registration came from, for log lines and errors.
    pub file: PathBuf,
}

impl AppService {
    pub fn id(&self) -> &str {
        &self.registration.id
    }

    pub fn url(&self) -> Option<&str> {
        self.registration.url.as_deref().filter(|url| !url.is_empty())
    }

    /// Masqueraded users are rate-limited unless the file says otherwise (the spec's default).
    pub fn rate_limited(&self) -> bool {
        self.registration.rate_limited.unwrap_or(true)
    }

    /// A user the service may act as: its own user or one in its user namespaces.
    pub fn is_interested_in_user(&self, user_id: &str) -> bool {
        user_id == self.sender.as_str() || self.users.iter().any(|p| p.matches(user_id))
    }

    pub fn owns_user_exclusively(&self, user_id: &str) -> bool {
        user_id == self.sender.as_str() || self.users.iter().any(|p| p.exclusive && p.matches(user_id))
    }

    pub fn is_interested_in_alias(&self, alias: &str) -> bool {
        self.aliases.iter().any(|p| p.matches(alias))
    }

    pub fn owns_alias_exclusively(&self, alias: &str) -> bool {
        self.aliases.iter().any(|p| p.exclusive && p.matches(alias))
    }

    pub fn is_interested_in_room(&self, room_id: &str) -> bool {
        self.rooms.iter().any(|p| p.matches(room_id))
    }

    pub fn provides_protocol(&self, protocol: &str) -> bool {
        self.registration.protocols.as_ref().is_some_and(|list| list.iter().any(|p| p == protocol))
    }
}

/// The fields Synapse reads beyond ruma's `Registration`.
#[derive(Deserialize)]
struct Extensions {
    #[serde(default, rename = "de.sorunome.msc2409.push_ephemeral")]
    push_ephemeral: Option<bool>,
    #[serde(default, rename = "org.matrix.msc3202")]
    msc3202: Option<bool>,
}

/// A registration that cannot be used: which file, and what is wrong in it.
#[derive(Debug, thiserror::Error)]
#[error("application service registration {}: {message}", file.display())]
pub struct RegistrationError {
    pub file: PathBuf,
    pub message: String,
}

fn compile(file: &Path, field: &str, namespace: &[ruma::api::appservice::Namespace]) -> Result<Vec<Pattern>, RegistrationError> {
    namespace
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            Regex::new(&entry.regex).map(|regex| Pattern { exclusive: entry.exclusive, regex }).map_err(|error| RegistrationError {
                file: file.to_owned(),
                message: format!("namespaces.{field}[{index}].regex is not a valid regular expression: {error}"),
            })
        })
        .collect()
}

/// Parses and checks one registration file's text.
pub fn parse(file: &Path, text: &str, server_name: &ServerName) -> Result<AppService, RegistrationError> {
    let error = |message: String| RegistrationError { file: file.to_owned(), message };
    let registration: Registration = serde_yaml_ng::from_str(text).map_err(|e| error(e.to_string()))?;
    let extensions: Extensions = serde_yaml_ng::from_str(text).map_err(|e| error(e.to_string()))?;
    for (field, value) in [("id", &registration.id), ("as_token", &registration.as_token), ("hs_token", &registration.hs_token)] {
        if value.trim().is_empty() {
            return Err(error(format!("{field} must not be empty")));
        }
    }
    if let Some(url) = registration.url.as_deref().filter(|url| !url.is_empty()) {
        let parsed = reqwest::Url::parse(url).map_err(|e| error(format!("url {url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(error(format!("url {url:?} must be http or https")));
        }
    }
    // The spec's localpart grammar, as new users get it.
    let localpart = registration.sender_localpart.as_str();
    let conforming = !localpart.is_empty() && localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
    if !conforming {
        return Err(error(format!("sender_localpart {localpart:?} is not a valid localpart (a-z, 0-9 and ._=-/+)")));
    }
    let sender = UserId::parse_with_server_name(localpart, server_name)
        .map_err(|e| error(format!("sender_localpart {localpart:?} is not a valid localpart: {e}")))?;
    let users = compile(file, "users", &registration.namespaces.users)?;
    let aliases = compile(file, "aliases", &registration.namespaces.aliases)?;
    let rooms = compile(file, "rooms", &registration.namespaces.rooms)?;
    let receive_ephemeral = registration.receive_ephemeral || extensions.push_ephemeral.unwrap_or(false);
    let device_lists = extensions.msc3202.unwrap_or(false);
    Ok(AppService { registration, sender, users, aliases, rooms, receive_ephemeral, device_lists, file: file.to_owned() })
}

/// Reads every configured registration; ids and tokens must be unique across them.
pub fn load(files: &[PathBuf], server_name: &ServerName) -> Result<Vec<AppService>, RegistrationError> {
    let mut services: Vec<AppService> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| RegistrationError { file: file.clone(), message: format!("cannot be read: {e}") })?;
        let service = parse(file, &text, server_name)?;
        let duplicate = |field: &str, other: &AppService| RegistrationError {
            file: file.clone(),
            message: format!("{field} is the same as in {}", other.file.display()),
        };
        for other in &services {
            if other.id() == service.id() {
                return Err(duplicate("id", other));
            }
            if other.registration.as_token == service.registration.as_token {
                return Err(duplicate("as_token", other));
            }
            if other.sender == service.sender {
                return Err(duplicate("sender_localpart", other));
            }
        }
        services.push(service);
    }
    Ok(services)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r##"
id: irc
url: "http://127.0.0.1:9000"
as_token: as-secret
hs_token: hs-secret
sender_localpart: ircbot
rate_limited: false
protocols: ["irc"]
de.sorunome.msc2409.push_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: "@irc_.*:example.org"
  aliases:
    - exclusive: false
      regex: "#irc_.*"
  rooms: []
"##;

    fn server() -> &'static ServerName {
        <&ServerName>::try_from("example.org").unwrap()
    }

    #[test]
    fn a_synapse_registration_is_read() {
        let service = parse(Path::new("irc.yaml"), FILE, server()).unwrap();
        assert_eq!(service.id(), "irc");
        assert_eq!(service.sender, "@ircbot:example.org");
        assert!(service.receive_ephemeral);
        assert!(!service.device_lists);
        assert!(!service.rate_limited());
        assert!(service.provides_protocol("irc"));
        assert!(service.owns_user_exclusively("@irc_alice:example.org"));
        assert!(service.owns_user_exclusively("@ircbot:example.org"));
        assert!(!service.is_interested_in_user("@alice:example.org"));
        // Anchored at the start only, as Synapse matches.
        assert!(!service.is_interested_in_user("@x_irc_alice:example.org"));
        assert!(service.is_interested_in_alias("#irc_rust:example.org"));
        assert!(!service.owns_alias_exclusively("#irc_rust:example.org"));
    }

    #[test]
    fn a_bad_file_names_the_field() {
        let missing = FILE.replace("hs_token: hs-secret\n", "");
        let error = parse(Path::new("irc.yaml"), &missing, server()).unwrap_err().to_string();
        assert!(error.contains("irc.yaml") && error.contains("hs_token"), "{error}");

        let bad_regex = FILE.replace("\"#irc_.*\"", "\"#irc_(\"");
        let error = parse(Path::new("irc.yaml"), &bad_regex, server()).unwrap_err().to_string();
        assert!(error.contains("namespaces.aliases[0].regex"), "{error}");

        let bad_sender = FILE.replace("sender_localpart: ircbot", "sender_localpart: \"IRC bot\"");
        let error = parse(Path::new("irc.yaml"), &bad_sender, server()).unwrap_err().to_string();
        assert!(error.contains("sender_localpart"), "{error}");
    }

    #[test]
    fn a_null_url_means_no_traffic() {
        let service = parse(Path::new("a.yaml"), &FILE.replace("url: \"http://127.0.0.1:9000\"", "url: null"), server()).unwrap();
        assert_eq!(service.url(), None);
    }
}
