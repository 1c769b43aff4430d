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

/// The client webhook deliveries use: it connects only to the addresses `destinations` permits
/// (a name is resolved, and its addresses checked, at every connection: DNS rebinding cannot
/// slip an internal address past a check made earlier), follows no redirect, and uses no proxy
/// from the environment.
pub fn webhook_client(destinations: gitstratum_core::Destinations) -> Result<reqwest::Client, reqwest::Error> {
    client_builder()
        .user_agent("GitStratum-Hookshot")
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(std::sync::Arc::new(CheckedResolver(destinations)))
        .build()
}

/// Resolves with the system resolver, then keeps only the addresses the policy permits.
struct CheckedResolver(gitstratum_core::Destinations);

/// The error a delivery reports when its destination is not allowed.
#[derive(Debug)]
pub struct DestinationRefused;

impl std::fmt::Display for DestinationRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the destination is not allowed: it resolves to a private or internal address")
    }
}

impl std::error::Error for DestinationRefused {}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<std::net::SocketAddr> = found.filter(|a| destinations.permits(&host, a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(DestinationRefused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// A one-shot HTTP server on loopback that answers every request with `response`.
    fn server(response: &'static str) -> (u16, std::sync::mpsc::Receiver<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(4) {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = tx.send(());
                let _ = stream.write_all(response.as_bytes());
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn webhook_deliveries_reach_only_allowed_destinations_and_follow_no_redirect() {
        let (port, hits) =
            server("HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n");
        // A name that resolves to loopback is refused as the connection is made.
        let strict = webhook_client(gitstratum_core::Destinations::default()).expect("client");
        let err = strict.post(format!("http://localhost:{port}/")).send().await.expect_err("refused");
        let mut source: Option<&dyn std::error::Error> = Some(&err);
        let mut refused = false;
        while let Some(e) = source {
            refused |= e.is::<DestinationRefused>();
            source = e.source();
        }
        assert!(refused, "{err:?}");
        assert!(hits.try_recv().is_err(), "nothing reached the receiver");
        // Allowed, it is reached, and its redirect is not followed.
        let allowed = gitstratum_core::Destinations::parse(["localhost"]).expect("list");
        let client = webhook_client(allowed).expect("client");
        let response = client.post(format!("http://localhost:{port}/")).send().await.expect("delivered");
        assert_eq!(response.status().as_u16(), 302);
    }
}
