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
    /// Loads `<data_dir>/signing.key`, generating it on first start.
    /// File format: `ed25519 <version> <base64 PKCS#8 document>`.
    pub fn load_or_generate(server_name: OwnedServerName, data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("signing.key");
        if !path.exists() {
            let document = Ed25519KeyPair::generate();
            let version: String = {
                use rand::Rng;
                let mut rng = rand::thread_rng();
                (0..6).map(|_| rng.sample(rand::distributions::Alphanumeric) as char).collect()
            };
            let line = format!("ed25519 a_{version} {}\n", Base64::<ruma::serde::base64::Standard, _>::new(document.to_vec()).encode());
            std::fs::write(&path, line).with_context(|| format!("writing {}", path.display()))?;
            restrict_permissions(&path);
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut parts = text.split_whitespace();
        let (Some("ed25519"), Some(version), Some(document)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("{} is not an `ed25519 <version> <key>` line", path.display());
        };
        let document = Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(document)
            .map_err(|e| anyhow::anyhow!("bad signing key encoding: {e}"))?;
        let keypair = Ed25519KeyPair::from_der(document.as_bytes(), version.to_owned())
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

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}
