//! The one outbound HTTP(S) client set-up for everything that is not ACME (notifications,
//! remote probes): public roots, HTTP/1, ring.

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type WebClient<B> = Client<hyper_rustls::HttpsConnector<HttpConnector>, B>;

/// The one HTTPS connector of every outbound client (ACME, etcd, notifications, probes), with
/// `TCP_NODELAY` on: without it a small request waits for the peer's delayed ACK (Nagle's
/// algorithm meeting delayed ACK), about 40 ms per new connection to the CA.
pub fn connector(
    tls: rustls::ClientConfig,
    plain_http: bool,
) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    match plain_http {
        true => builder.https_or_http().enable_http1().wrap_connector(tcp),
        false => builder.https_only().enable_http1().wrap_connector(tcp),
    }
}

/// A client for `http://` and `https://` URLs, trusting the public roots.
pub fn client<B>() -> WebClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    client_trusting(roots)
}

fn client_trusting<B>(roots: rustls::RootCertStore) -> WebClient<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
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
    Client::builder(TokioExecutor::new()).build(connector(tls, true))
}

/// Why a time source gave no time; each names the source.
#[derive(Debug, thiserror::Error)]
pub enum TimeSourceError {
    #[error("--root {}: {source}", path.display())]
    Root {
        path: std::path::PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{url}: {source}")]
    Request { url: String, source: http::Error },
    #[error("{url}: no answer within 10 s")]
    Timeout { url: String },
    #[error("{url}: {}", chain(source))]
    Connect {
        url: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url} sent no Date header")]
    NoDate { url: String },
    #[error("{url}: {source}")]
    Date {
        url: String,
        source: httpdate::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// How far this host's clock is ahead of the `Date` of `url`'s answer (negative: behind), in
/// seconds, to within the round trip of one request. `extra_root` (PEM) is trusted besides the
/// public roots, for a time source inside a private PKI.
pub async fn clock_offset(
    url: &str,
    extra_root: Option<&std::path::Path>,
) -> Result<i64, TimeSourceError> {
    use http_body_util::Empty;
    use rustls_pki_types::pem::PemObject;
    let url_ = || url.to_string();
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_root {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|source| {
            TimeSourceError::Root {
                path: path.to_path_buf(),
                source,
            }
        })?;
        for cert in certs.flatten() {
            let _ = roots.add(cert);
        }
    }
    let client = client_trusting::<Empty<bytes::Bytes>>(roots);
    let request = http::Request::head(url)
        .body(Empty::new())
        .map_err(|source| TimeSourceError::Request {
            url: url_(),
            source,
        })?;
    let sent = std::time::SystemTime::now();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| TimeSourceError::Timeout { url: url_() })?
            .map_err(|source| TimeSourceError::Connect {
                url: url_(),
                source,
            })?;
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| TimeSourceError::NoDate { url: url_() })?;
    let server = httpdate::parse_http_date(date).map_err(|source| TimeSourceError::Date {
        url: url_(),
        source,
    })?;
    Ok(offset_since(sent, server))
}

/// How far this host's clock is ahead of `server`'s time (negative: behind), in seconds, for a
/// request sent at `sent` and answered now: the server's clock is taken to have been read
/// halfway through the round trip.
pub fn offset_since(sent: std::time::SystemTime, server: std::time::SystemTime) -> i64 {
    let midpoint = sent + sent.elapsed().unwrap_or_default() / 2;
    match midpoint.duration_since(server) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(behind) => -(behind.duration().as_secs() as i64),
    }
}

/// An error and its causes on one line: "client error (Connect): invalid peer certificate: …".
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
