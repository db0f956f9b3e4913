//! m.room.server_acl: servers a room's admins have banned from taking part.

use ruma::{RoomId, ServerName};
use serde_json::Value;

use super::Federation;
use crate::error::Result;

/// Matrix glob: `*` any run of characters, `?` one character.
fn glob_matches(pattern: &str, name: &str) -> bool {
    fn matches(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => matches(&p[1..], n) || (!n.is_empty() && matches(p, &n[1..])),
            (Some('?'), Some(_)) => matches(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => matches(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    matches(&p, &n)
}

/// Whether an ACL content lets `server` take part (spec rules: IP literals, deny, allow).
pub fn allowed_by(acl: &Value, server: &ServerName) -> bool {
    // ACLs match the host name, without the port.
    let name = server.as_str();
    let host = if let Some(rest) = name.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match name.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => name,
        }
    };
    let is_ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok();
    if is_ip && !acl["allow_ip_literals"].as_bool().unwrap_or(true) {
        return false;
    }
    let list = |key: &str| acl[key].as_array().cloned().unwrap_or_default();
    if list("deny").iter().filter_map(Value::as_str).any(|p| glob_matches(p, host)) {
        return false;
    }
    list("allow").iter().filter_map(Value::as_str).any(|p| glob_matches(p, host))
}

impl Federation {
    /// `M_FORBIDDEN` when the room's server ACL bans `server`.
    pub async fn check_acl(&self, room_id: &RoomId, server: &ServerName) -> Result<()> {
        if let Some(acl) = self.rooms.current_state_content(room_id, "m.room.server_acl", "").await? {
            if !allowed_by(&acl, server) {
                return Err(crate::error::MatrixError::forbidden(format!("{server} is banned from {room_id} by its server ACL")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn acl_rules() {
        let acl = json!({ "allow": ["*"], "deny": ["evil.example", "*.bad.org"], "allow_ip_literals": false });
        let name = |s: &str| ServerName::parse(s).unwrap();
        assert!(allowed_by(&acl, &name("good.example")));
        assert!(allowed_by(&acl, &name("good.example:8448")));
        assert!(!allowed_by(&acl, &name("evil.example")));
        assert!(!allowed_by(&acl, &name("evil.example:443")));
        assert!(!allowed_by(&acl, &name("x.bad.org")));
        assert!(!allowed_by(&acl, &name("127.0.0.1:8448")));
        assert!(allowed_by(&json!({ "allow": ["*"] }), &name("127.0.0.1:8448")));
        assert!(!allowed_by(&json!({ "allow": ["*"], "deny": ["::1"] }), &name("[::1]:8448")));
        assert!(!allowed_by(&json!({ "allow": ["only.example"] }), &name("other.example")));
        assert!(!allowed_by(&json!({}), &name("any.example")), "no allow list allows nobody");
    }
}
