//! The server's ed25519 signing key, kept in the data directory.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use ruma::{
    serde::Base64,
    signatures::{Ed25519KeyPair, KeyPair},
    OwnedServerName,
};

/// Who this server is: its name and signing key.
#[derive(Clone)]
pub struct ServerKeys {
    pub server_name: OwnedServerName,
    pub keypair: Arc<Ed25519KeyPair>,
}

impl ServerKeys {
    /// Loads `<data_dir>/signing.key`, generating it on first start. The file has Synapse's
    /// format, `ed25519 <version> <unpadded base64 seed>`, so keys move between the two.
    pub fn load_or_generate(server_name: OwnedServerName, data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("signing.key");
        if !path.exists() {
            use rand::{Rng, RngCore};
            let mut rng = rand::thread_rng();
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            let version: String = (0..6).map(|_| rng.sample(rand::distributions::Alphanumeric) as char).collect();
            let line = format!("ed25519 a_{version} {}\n", Base64::<ruma::serde::base64::Standard, _>::new(seed.to_vec()).encode());
            std::fs::write(&path, line).with_context(|| format!("writing {}", path.display()))?;
            restrict_permissions(&path);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut parts = text.split_whitespace();
        let (Some("ed25519"), Some(version), Some(seed)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("{} is not an `ed25519 <version> <seed>` line", path.display());
        };
        Self::from_seed(server_name, version, seed)
    }

    /// A key from its unpadded-base64 32-byte seed.
    pub fn from_seed(server_name: OwnedServerName, version: &str, seed_b64: &str) -> anyhow::Result<Self> {
        let seed = Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(seed_b64)
            .map_err(|e| anyhow::anyhow!("bad signing key encoding: {e}"))?;
        anyhow::ensure!(seed.as_bytes().len() == 32, "an ed25519 seed is 32 bytes");
        // PKCS#8 v1 wrapping of an Ed25519 private key (RFC 8410): fixed prefix + seed.
        let mut document = hex::decode("302e020100300506032b657004220420").expect("constant hex");
        document.extend_from_slice(seed.as_bytes());
        let keypair = Ed25519KeyPair::from_der(&document, version.to_owned())
            .map_err(|e| anyhow::anyhow!("bad signing key: {e}"))?;
        Ok(Self { server_name, keypair: Arc::new(keypair) })
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.keypair.version())
    }

    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.keypair.sign(message).as_bytes().to_vec()
    }
}

/// Canonical JSON of a client-supplied value. Numbers written with a fraction or exponent
/// but an integral value (`1e10`, `-0`) are read as the integers they are, as the spec's
/// appendix requires; other non-integers are rejected.
pub fn to_canonical(value: &serde_json::Value) -> Result<ruma::CanonicalJsonValue, String> {
    use ruma::CanonicalJsonValue as C;
    use serde_json::Value as V;
    Ok(match value {
        V::Null => C::Null,
        V::Bool(b) => C::Bool(*b),
        V::String(s) => C::String(s.clone()),
        V::Number(n) => {
            let int = match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => i,
                (None, Some(f)) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 => f as i64,
                _ => return Err(format!("{n} is not an integer in the canonical JSON range")),
            };
            C::Integer(ruma::Int::try_from(int).map_err(|_| format!("{n} is out of the canonical JSON integer range"))?)
        }
        V::Array(items) => C::Array(items.iter().map(to_canonical).collect::<Result<_, _>>()?),
        V::Object(map) => C::Object(map.iter().map(|(k, v)| Ok((k.clone(), to_canonical(v)?))).collect::<Result<_, String>>()?),
    })
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}
