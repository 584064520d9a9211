//! The one way our HTTP clients start: a reqwest builder whose TLS is rustls
//! with the ring provider and the webpki roots.
//!
//! reqwest 0.13 offers no feature for that combination: its `rustls` feature
//! brings aws-lc-rs and verifies against the system's roots, and
//! `rustls-no-provider` (ours) needs either a process-wide crypto provider or
//! a preconfigured rustls config. Every client gets the config built here,
//! so no process-wide state is set and a host without a CA bundle still
//! verifies certificates.

use std::sync::Arc;

/// A client builder with our TLS configuration; the caller adds its
/// timeouts, redirect and proxy policy. Building a client any other way
/// (`reqwest::Client::new()` included) panics for want of a crypto
/// provider.
///
/// The error is rustls refusing the protocol versions, which ring supports:
/// a broken build rather than anything a caller can cause.
pub fn builder() -> Result<reqwest::ClientBuilder, rustls::Error> {
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
        .with_no_client_auth();
    // What reqwest announces when it builds the config itself; a
    // preconfigured one is used as it is. No `h2`: reqwest is built without
    // HTTP/2.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// reqwest takes the config as `impl Any` and refuses, only when the
    /// client is built, one of a rustls release other than its own.
    #[test]
    fn builds_a_client() {
        builder().unwrap().build().unwrap();
    }
}
