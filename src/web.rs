//! The one outbound HTTP(S) client set-up for everything that is not ACME (notifications,
//! remote probes): public roots, HTTP/1, ring.

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type WebClient<B> = Client<hyper_rustls::HttpsConnector<HttpConnector>, B>;

/// A client for `http://` and `https://` URLs, trusting the public roots.
pub fn client<B>() -> WebClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
    .unwrap_or_else(|_| {
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}
