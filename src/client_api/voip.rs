//! `/voip/turnServer`: TURN servers and credentials for calls. With a shared secret, the
//! credentials follow coturn's REST scheme (`use-auth-secret`): the username is
//! `<expiry unix seconds>:<user id>` and the password base64(HMAC-SHA1(secret, username)),
//! as Synapse hands them out; otherwise the configured fixed ones.

use std::{sync::Arc, time::Duration};

use axum::extract::State;
use hmac::{Hmac, Mac};
use ruma::api::client::voip::get_turn_server_info::v3 as turn;

use super::extract::{Ruma, RumaResponse};
use crate::{
    config::{Config, VoipConfig},
    error::{MatrixError, Result},
};

/// The coturn REST credentials for `user_id`, valid until `expires` (unix seconds).
pub fn shared_secret_credentials(secret: &str, user_id: &str, expires: u64) -> (String, String) {
    let username = format!("{expires}:{user_id}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let mut password = ruma::serde::Base64::<ruma::serde::base64::Standard, _>::new(mac.finalize().into_bytes().to_vec()).encode();
    // coturn compares the padded form.
    while password.len() % 4 != 0 {
        password.push('=');
    }
    (username, password)
}

fn configured(voip: &VoipConfig) -> bool {
    !voip.turn_uris.is_empty() && (!voip.turn_shared_secret.is_empty() || !voip.turn_username.is_empty())
}

pub async fn turn_server(State(config): State<Arc<Config>>, request: Ruma<turn::Request>) -> Result<RumaResponse<turn::Response>> {
    let voip = &config.voip;
    let requester = request.user();
    if !configured(voip) || (requester.is_guest && !voip.turn_allow_guests) {
        return Err(MatrixError::not_found("No TURN server is configured"));
    }
    let lifetime = Duration::from_secs(voip.turn_user_lifetime_secs);
    let (username, password) = if voip.turn_shared_secret.is_empty() {
        (voip.turn_username.clone(), voip.turn_password.clone())
    } else {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        shared_secret_credentials(&voip.turn_shared_secret, requester.user_id.as_str(), (now + lifetime).as_secs())
    };
    Ok(RumaResponse(turn::Response::new(username, password, voip.turn_uris.clone(), lifetime)))
}

#[cfg(test)]
mod tests {
    /// The password coturn computes for the same secret and username (HMAC-SHA1, base64).
    #[test]
    fn credentials_follow_coturns_rest_scheme() {
        let (username, password) = super::shared_secret_credentials("north", "@alice:example.org", 1_700_000_000);
        assert_eq!(username, "1700000000:@alice:example.org");
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"north", b"1700000000:@alice:example.org", hashlib.sha1).digest()).decode())'
        assert_eq!(password, "b7c/MWmorxmLryRFjaJYkUW5nOo=");
    }
}
