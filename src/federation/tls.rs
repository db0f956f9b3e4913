//! TLS for the federation listener: the configured certificate, or a self-signed one made in
//! the data dir for development.

use std::path::Path;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;

use crate::config::Config;

/// rustls needs one process-wide crypto provider; ring is the one the whole crate uses.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn listener_config(config: &Config) -> anyhow::Result<RustlsConfig> {
    install_crypto_provider();
    let federation = &config.federation;
    if !federation.tls_cert.is_empty() || !federation.tls_key.is_empty() {
        return rustls_config(&federation.tls_cert, &federation.tls_key).await;
    }
    let (cert, key) = self_signed(config)?;
    Ok(RustlsConfig::from_pem(cert, key).await?)
}

/// A TLS listener's configuration from PEM files; the error names both files.
pub async fn rustls_config(cert: &str, key: &str) -> anyhow::Result<RustlsConfig> {
    install_crypto_provider();
    RustlsConfig::from_pem_file(cert, key).await.with_context(|| format!("loading TLS certificate {cert} and key {key}"))
}

/// A self-signed certificate for the server name, made once and kept in the data dir.
fn self_signed(config: &Config) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let cert_path = config.data_dir.join("federation-selfsigned.crt");
    let key_path = config.data_dir.join("federation-selfsigned.key");
    if cert_path.exists() && key_path.exists() {
        let read = |path: &std::path::Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        return Ok((read(&cert_path)?, read(&key_path)?));
    }
    let host = host_of(config.server_name.as_str());
    let mut names = vec![host.to_owned()];
    if host != "localhost" {
        names.push("localhost".to_owned());
    }
    let certified = rcgen::generate_simple_self_signed(names).context("generating a self-signed certificate")?;
    let cert = certified.cert.pem().into_bytes();
    let key = certified.signing_key.serialize_pem().into_bytes();
    std::fs::write(&cert_path, &cert).with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(&key_path, &key)?;
    tracing::warn!(path = %cert_path.display(), "federation uses a self-signed certificate: other servers must skip TLS verification");
    Ok((cert, key))
}

fn host_of(server_name: &str) -> &str {
    if let Some(rest) = server_name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    server_name.rsplit_once(':').map(|(host, _)| host).unwrap_or(server_name)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
