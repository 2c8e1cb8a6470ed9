//! The HTTPS client certkeeper speaks ACME over: the public web roots plus an optional extra
//! root (a test CA such as pebble), and a timeout on every request.
//!
//! instant-acme's own `builder_with_root` trusts only the first certificate of a file and drops
//! the public roots, so we hand it a client of our own instead.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{AcmeError, ExtraRootError};

/// Cheap to clone: clones share one connection pool (hyper's `Client`).
#[derive(Clone)]
pub struct AcmeHttp {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    /// How long one request may take before it counts as failed (`acme.request_timeout_secs`).
    timeout: Duration,
    /// Where certificate downloads are kept, when a chain is to be chosen.
    downloads: Option<Downloads>,
    /// The last `Retry-After` the CA sent with a refusal (429 or 503), and when it came:
    /// instant-acme's errors carry the problem document but not the headers.
    retry_after: Arc<Mutex<Option<(Instant, SystemTime)>>>,
}

/// How long a refusal's `Retry-After` is taken to belong to the error that follows it.
const RETRY_AFTER_FRESH: Duration = Duration::from_secs(60);

/// Certificate chains as the CA served them, by URL, with the alternate chains it linked
/// (RFC 8555 §7.4.2). instant-acme hands back the default chain's text only.
#[derive(Clone, Default)]
pub struct Downloads(Arc<Mutex<HashMap<String, Download>>>);

pub struct Download {
    pub pem: Bytes,
    /// The URLs of the alternate chains (`Link: <URL>;rel="alternate"`).
    pub alternates: Vec<String>,
}

impl Downloads {
    /// The chain last downloaded from `url`, forgotten once taken.
    pub fn take(&self, url: &str) -> Option<Download> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(url)
    }

    fn keep(&self, url: String, download: Download) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(url, download);
    }
}

impl AcmeHttp {
    pub fn new(extra_root: Option<&Path>, timeout: Duration) -> Result<Self, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_root {
            let bad = |source: ExtraRootError| AcmeError::ExtraRoot {
                path: path.to_path_buf(),
                source,
            };
            let mut added = 0;
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.into()))? {
                let cert = cert.map_err(|e| bad(e.into()))?;
                roots.add(cert).map_err(|e| bad(e.into()))?;
                added += 1;
            }
            if added == 0 {
                return Err(bad(ExtraRootError::Empty));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(AcmeError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = crate::net::web::connector(tls, false);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            timeout,
            downloads: None,
            retry_after: Arc::default(),
        })
    }

    /// The `Retry-After` of the CA's latest refusal, if it came within the last minute.
    pub fn recent_retry_after(&self) -> Option<SystemTime> {
        let seen = *self
            .retry_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        seen.filter(|(at, _)| at.elapsed() < RETRY_AFTER_FRESH)
            .map(|(_, until)| until)
    }

    /// Keeps every certificate chain downloaded through this client in `downloads`.
    pub fn keeping_downloads(self, downloads: Option<Downloads>) -> Self {
        Self { downloads, ..self }
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let url = req.uri().to_string();
        let response = self.client.request(req);
        let (timeout, downloads) = (self.timeout, self.downloads.clone());
        let retry_after = self.retry_after.clone();
        let answer = async move {
            let response = response
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let refused = matches!(response.status().as_u16(), 429 | 503);
            if refused
                && let Some(until) = retry_after_header(response.headers(), SystemTime::now())
            {
                *retry_after.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), until));
            }
            match downloads {
                Some(downloads) if is_certificate_chain(&response) => {
                    let (parts, body) = response.into_parts();
                    let pem = body
                        .collect()
                        .await
                        .map_err(|e| instant_acme::Error::Other(Box::new(e)))?
                        .to_bytes();
                    let alternates = alternate_links(&parts.headers, &url);
                    downloads.keep(
                        url,
                        Download {
                            pem: pem.clone(),
                            alternates,
                        },
                    );
                    Ok(BytesResponse {
                        parts,
                        body: Box::new(pem),
                    })
                }
                _ => Ok(BytesResponse::from(response)),
            }
        };
        Box::pin(async move {
            tokio::time::timeout(timeout, answer)
                .await
                .unwrap_or_else(|_| {
                    Err(instant_acme::Error::Other(
                        format!("no answer within {}s", timeout.as_secs()).into(),
                    ))
                })
        })
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): a number of seconds, or an HTTP date.
fn retry_after_header(headers: &http::HeaderMap, now: SystemTime) -> Option<SystemTime> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    match value.parse::<u64>() {
        Ok(seconds) => now.checked_add(Duration::from_secs(seconds)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

fn is_certificate_chain<B>(response: &http::Response<B>) -> bool {
    response.status().is_success()
        && response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/pem-certificate-chain"))
}

/// The targets of `Link: <URL>;rel="alternate"` (RFC 8288), made absolute against `base`.
pub(super) fn alternate_links(headers: &http::HeaderMap, base: &str) -> Vec<String> {
    let origin = base
        .find("://")
        .and_then(|scheme| {
            base[scheme + 3..]
                .find('/')
                .map(|path| &base[..scheme + 3 + path])
        })
        .unwrap_or(base);
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|link| {
            let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            let alternate = params.split(';').any(|p| {
                let p = p.trim().to_ascii_lowercase();
                p == "rel=\"alternate\"" || p == "rel=alternate"
            });
            match (alternate, target.starts_with('/')) {
                (false, _) => None,
                (true, true) => Some(format!("{origin}{target}")),
                (true, false) => Some(target.to_string()),
            }
        })
        .collect()
}

/// RFC 8555 §6.1: every request names its client (pebble 2.10 refuses one without).
const USER_AGENT: &str = concat!("certkeeper/", env!("CARGO_PKG_VERSION"));

impl AcmeHttp {
    /// A plain GET of `url` (the directory).
    fn get_request(url: &str) -> Result<http::Request<BodyWrapper<Bytes>>, GetError> {
        (http::Request::get(url).body(BodyWrapper::default())).map_err(GetError::Request)
    }

    /// One request certkeeper makes itself (not through instant-acme), with its User-Agent,
    /// within the request timeout.
    async fn exchange(
        &self,
        mut request: http::Request<BodyWrapper<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, GetError> {
        let agent = http::HeaderValue::from_static(USER_AGENT);
        request
            .headers_mut()
            .insert(http::header::USER_AGENT, agent);
        tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| GetError::Timeout(self.timeout.as_secs()))?
            .map_err(GetError::Connect)
    }

    /// A request certkeeper makes itself (the directory, revocation with a certificate's key):
    /// the answer's head and its body, at most 1 MiB.
    pub async fn send(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), GetError> {
        let (parts, body) = self.exchange(request).await?.into_parts();
        let body = http_body_util::Limited::new(body, 1 << 20)
            .collect()
            .await
            .map_err(GetError::Body)?
            .to_bytes();
        Ok((parts, body))
    }

    /// The body of a GET of `url` (the directory), as JSON.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, GetError> {
        let (parts, body) = self.send(Self::get_request(url)?).await?;
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(GetError::Json)?;
        match parts.status.is_success() {
            true => Ok(json),
            false => Err(GetError::Status {
                status: parts.status,
                detail: json["detail"].as_str().unwrap_or("no detail").to_string(),
            }),
        }
    }

    /// The CA's clock, from the `Date` header of a GET of `url` (the directory).
    pub async fn server_time(&self, url: &str) -> Result<std::time::SystemTime, GetError> {
        let response = self.exchange(Self::get_request(url)?).await?;
        let date = response
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .ok_or(GetError::NoDate)?;
        httpdate::parse_http_date(date).map_err(GetError::Date)
    }
}

/// A plain GET of the CA's directory that gave nothing usable, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("cannot build the request: {0}")]
    Request(#[source] http::Error),
    #[error("no answer within {0}s")]
    Timeout(u64),
    #[error("{}", super::chain(.0))]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("cannot read the answer: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the answer is not JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("HTTP {status}: {detail}")]
    Status {
        status: http::StatusCode,
        detail: String,
    },
    #[error("the CA sent no Date header")]
    NoDate,
    #[error("the CA's Date header cannot be read: {0}")]
    Date(#[source] httpdate::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let header = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::RETRY_AFTER, value.parse().unwrap());
            retry_after_header(&headers, now)
        };
        assert_eq!(header("120"), Some(now + Duration::from_secs(120)));
        assert_eq!(
            header("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784111777))
        );
        assert_eq!(header("soon"), None);
        assert_eq!(retry_after_header(&http::HeaderMap::new(), now), None);
    }

    #[test]
    fn alternate_links_are_read_from_every_link_header() {
        let mut headers = http::HeaderMap::new();
        for value in [
            "<https://ca.example/certZ/1f/1>;rel=\"alternate\"",
            "<https://ca.example/dir>;rel=\"index\", </certZ/1f/2>; rel=\"alternate\"",
            "<https://ca.example/issuer>;rel=\"up\"",
        ] {
            headers.append(http::header::LINK, value.parse().unwrap());
        }
        assert_eq!(
            alternate_links(&headers, "https://ca.example:14000/certZ/1f"),
            [
                "https://ca.example/certZ/1f/1",
                "https://ca.example:14000/certZ/1f/2"
            ]
        );
    }
}
