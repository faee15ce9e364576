//! TLS for `rediss://` (feature `redis-tls`): the crypto provider rustls needs, and the CA file.
//!
//! rustls picks its process-wide crypto provider by itself only when exactly one is compiled
//! in; a build with both ring and aws-lc-rs (an `--all-features` build of a server that also
//! serves tonic over TLS has both) would panic on its first TLS connection. So the fleet
//! installs ring's provider as the process default when, and only when, none is installed yet:
//! a server that installs its own provider first (aws-lc-rs for FIPS, say) keeps it.

use std::path::Path;

use crate::error::ConfigError;

/// Makes sure rustls has a process default crypto provider, installing ring's if none is.
pub(super) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one meanwhile: then that one is kept, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The CA certificates of `path`, for the client.
pub(super) fn certificates(path: &Path) -> Result<redis::TlsCertificates, ConfigError> {
    let pem = std::fs::read(path)
        .map_err(|err| ConfigError::new("fleet.ca_file", format!("{}: {err}", path.display())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(
            "fleet.ca_file",
            format!("{}: holds no PEM certificate", path.display()),
        ));
    }
    Ok(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    })
}
