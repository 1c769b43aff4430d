//! The one way GitStratum builds an HTTP client (webhook deliveries, the CLI, tests): TLS through
//! rustls with the *ring* crypto provider, certificates verified against the operating system's
//! trust store (`rustls-platform-verifier`; on Linux it honours `SSL_CERT_FILE`/`SSL_CERT_DIR`, so
//! an operator can add a private CA).

use std::sync::Once;

/// A client builder with TLS ready. Every `reqwest::Client` must come from here: the crypto
/// provider is installed once per process before the first client is built.
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when a provider is already installed, which is what we want either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// A client with the defaults.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    client_builder().build()
}
