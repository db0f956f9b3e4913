//! Signing keys: ours, served and counter-signed as a notary; others', fetched and cached.

use std::collections::BTreeMap;

use ruma::{
    api::federation::{authentication::XMatrix, discovery::get_server_keys},
    serde::Base64,
    signatures::{sign_json, PublicKeyMap},
    CanonicalJsonObject, ServerName,
};
use serde_json::{json, Value};

use super::Federation;
use crate::{
    error::{MatrixError, Result},
    storage::{now_ms, server_keys as repo},
};

/// How long others may cache our key response.
const KEY_VALIDITY_MS: i64 = 24 * 60 * 60 * 1000;

fn unauthorized(message: impl Into<String>) -> MatrixError {
    MatrixError::new(http::StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", message)
}

fn to_object(value: Value) -> Result<CanonicalJsonObject> {
    match crate::crypto::to_canonical(&value).map_err(MatrixError::internal)? {
        ruma::CanonicalJsonValue::Object(object) => Ok(object),
        _ => Err(MatrixError::internal("not an object")),
    }
}

impl Federation {
    /// Signs a JSON object with our key (adding to any signatures it has).
    pub fn sign(&self, value: Value) -> Result<Value> {
        let mut object = to_object(value)?;
        sign_json(self.server_name().as_str(), &*self.keys.keypair, &mut object).map_err(|e| MatrixError::internal(e.to_string()))?;
        Ok(serde_json::to_value(object)?)
    }

    /// GET /_matrix/key/v2/server: our verify key, self-signed.
    pub fn own_keys(&self) -> Result<Value> {
        let public = Base64::<ruma::serde::base64::Standard, _>::new(self.keys.keypair.public_key().to_vec()).encode();
        self.sign(json!({
            "server_name": self.server_name(),
            "verify_keys": { self.keys.key_id(): { "key": public } },
            "old_verify_keys": {},
            "valid_until_ts": now_ms() + KEY_VALIDITY_MS,
        }))
    }

    /// Checks a key response's self-signature and stores its keys.
    async fn store_key_response(&self, server: &ServerName, response: &Value) -> Result<()> {
        if response["server_name"].as_str() != Some(server.as_str()) {
            return Err(MatrixError::unknown("key response is for another server"));
        }
        let valid_until = response["valid_until_ts"].as_i64().unwrap_or(0);
        let verify_keys = response["verify_keys"].as_object().cloned().unwrap_or_default();
        let mut key_map = BTreeMap::new();
        for (key_id, key) in &verify_keys {
            let public = key["key"].as_str().ok_or_else(|| MatrixError::unknown("verify key without key"))?;
            let public = Base64::parse(public).map_err(|e| MatrixError::unknown(format!("bad verify key: {e}")))?;
            key_map.insert(key_id.clone(), public);
        }
        // Keep only the server's own signature for the self-check.
        let mut self_signed = response.clone();
        if let Some(own) = response["signatures"].get(server.as_str()) {
            self_signed["signatures"] = json!({ server.as_str(): own });
        }
        let public_keys: PublicKeyMap = [(server.to_string(), key_map)].into();
        ruma::signatures::verify_json(&public_keys, &to_object(self_signed)?)
            .map_err(|e| MatrixError::unknown(format!("{server}'s key response is not signed by its key: {e}")))?;
        let text = response.to_string();
        for (key_id, key) in verify_keys {
            let public = key["key"].as_str().unwrap_or_default();
            repo::upsert(self.db.pool(), server.as_str(), &key_id, public, valid_until, &text).await?;
        }
        if let Some(old) = response["old_verify_keys"].as_object() {
            for (key_id, key) in old {
                let (Some(public), Some(expired)) = (key["key"].as_str(), key["expired_ts"].as_i64()) else { continue };
                repo::upsert(self.db.pool(), server.as_str(), key_id, public, expired, &text).await?;
            }
        }
        Ok(())
    }

    /// Fetches a server's keys from itself, then from the configured notaries.
    async fn fetch_keys(&self, server: &ServerName) -> Result<()> {
        match self.send(server, get_server_keys::v2::Request::new()).await {
            Ok(response) => {
                let value: Value = serde_json::from_str(response.server_key.json().get())?;
                return self.store_key_response(server, &value).await;
            }
            Err(error) => tracing::info!(%server, %error, "direct key fetch failed"),
        }
        for notary in self.notaries.clone() {
            let request = ruma::api::federation::discovery::get_remote_server_keys::v2::Request::new(
                server.to_owned(),
                ruma::MilliSecondsSinceUnixEpoch::now(),
            );
            match self.send(&notary, request).await {
                Ok(response) => {
                    for key in response.server_keys {
                        let value: Value = serde_json::from_str(key.json().get())?;
                        if self.store_key_response(server, &value).await.is_ok() {
                            return Ok(());
                        }
                    }
                }
                Err(error) => tracing::info!(%server, %notary, %error, "notary key fetch failed"),
            }
        }
        Err(MatrixError::unknown(format!("Could not fetch the keys of {server}")))
    }

    /// A server's public key by id, valid at `at` (ms), fetched when not cached or stale.
    pub async fn verify_key(&self, server: &ServerName, key_id: &str, at: i64) -> Result<String> {
        if self.is_local(server) {
            if key_id == self.keys.key_id() {
                return Ok(Base64::<ruma::serde::base64::Standard, _>::new(self.keys.keypair.public_key().to_vec()).encode());
            }
            return Err(unauthorized("Unknown key of this server"));
        }
        if let Some((public, valid_until)) = repo::get(self.db.pool(), server.as_str(), key_id).await? {
            if valid_until >= at {
                return Ok(public);
            }
        }
        self.fetch_keys(server).await?;
        match repo::get(self.db.pool(), server.as_str(), key_id).await? {
            Some((public, valid_until)) if valid_until >= at => Ok(public),
            Some(_) => Err(unauthorized(format!("{server}'s key {key_id} has expired"))),
            None => Err(unauthorized(format!("{server} has no key {key_id}"))),
        }
    }

    /// Verifies an inbound request's X-Matrix signature; returns the origin server.
    pub async fn verify_request(&self, parts: &http::request::Parts, body: &[u8]) -> Result<ruma::OwnedServerName> {
        let x_matrix = XMatrix::extract_from_http_headers(&parts.headers)
            .map_err(|e| unauthorized(format!("Missing or malformed X-Matrix authorization: {e}")))?;
        let public = self.verify_key(&x_matrix.origin, x_matrix.key.as_str(), now_ms()).await?;
        let public = Base64::parse(&public).map_err(|_| unauthorized("Bad key"))?;
        let key_map: PublicKeyMap = [(x_matrix.origin.to_string(), [(x_matrix.key.to_string(), public)].into())].into();
        let mut request = http::Request::builder().method(parts.method.clone()).uri(parts.uri.clone());
        for (name, value) in &parts.headers {
            request = request.header(name, value);
        }
        let request = request.body(body).map_err(|e| MatrixError::bad_json(e.to_string()))?;
        x_matrix
            .verify_http_request(&request, self.server_name(), &key_map)
            .map_err(|e| unauthorized(format!("Invalid X-Matrix signature: {e}")))?;
        Ok(x_matrix.origin)
    }

    /// The notary's answer for a server: its key responses, each also signed by us.
    pub async fn notary_keys(&self, server: &ServerName, min_valid_until: i64) -> Result<Vec<Value>> {
        if self.is_local(server) {
            return Ok(vec![self.own_keys()?]);
        }
        let mut responses = repo::responses(self.db.pool(), server.as_str(), min_valid_until).await?;
        if responses.is_empty() {
            if self.fetch_keys(server).await.is_err() {
                return Ok(Vec::new());
            }
            responses = repo::responses(self.db.pool(), server.as_str(), min_valid_until).await?;
        }
        responses
            .into_iter()
            .map(|text| self.sign(serde_json::from_str(&text)?))
            .collect()
    }
}
