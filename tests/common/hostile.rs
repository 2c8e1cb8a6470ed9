//! A hostile CA: a TLS reverse proxy in front of a real pebble that passes every request
//! through, except for what the current [`Fault`] spoils. Pebble builds its URLs and checks
//! each request's signed URL from the `Host` header, which the proxy keeps, so the client
//! talks to the proxy only.

use std::convert::Infallible;
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Pebble;

/// What the CA gets wrong.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// The new order comes back as cut-off JSON.
    MalformedOrder,
    /// The order never leaves `processing` after finalization.
    StuckProcessing,
    /// The certificate download is this PEM chain (issued for other names, another key).
    Certificate(String),
    /// The intermediate of the downloaded chain is replaced by an unrelated CA certificate.
    BrokenChain,
    /// Every new order gets HTTP 500 with a `serverInternal` problem.
    ServerError,
    /// New orders are never answered.
    Silent,
    /// Every new order gets HTTP 429 with a `rateLimited` problem that names no time in its
    /// words, and `Retry-After` this many seconds.
    RateLimited(u64),
    /// The next this many looks at an order are refused as `badNonce`: three in a row
    /// outlast instant-acme's own retries.
    BadNonces(u32),
    /// Authorizations come back without challenges of this type (a CA that does not offer it).
    WithoutChallenge(&'static str),
    /// A new order that names the certificate it replaces gets `alreadyReplaced`.
    RefuseReplaces,
}

type Upstream = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Proxy {
    fault: Mutex<Fault>,
    upstream: Upstream,
    pebble: String,
    /// An unrelated CA certificate (PEM) for [`Fault::BrokenChain`].
    stranger: String,
    /// New orders that named the certificate they replace, and new orders in all.
    orders_replacing: AtomicUsize,
    orders: AtomicUsize,
}

pub struct HostileCa {
    pub directory_url: String,
    proxy: Arc<Proxy>,
    /// Dropping the runtime stops the proxy, including requests it holds unanswered.
    _runtime: tokio::runtime::Runtime,
}

impl HostileCa {
    /// A proxy on a free loopback port, with pebble's own TLS identity (the same
    /// `acme.extra_root` trusts it).
    pub fn start(pebble: &Pebble) -> HostileCa {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = pebble.dir.path();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("tls-cert.pem"))
                .expect("proxy cert")
                .map(|c| c.expect("proxy cert pem"))
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("tls-key.pem")).expect("proxy key");
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("proxy tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pebble.tls_root).expect("pebble root") {
            roots.add(cert.expect("root pem")).expect("add root");
        }
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client)
            .https_only()
            .enable_http1()
            .build();
        let upstream = Client::builder(TokioExecutor::new()).build(connector);
        let pebble_base = pebble.directory_url.trim_end_matches("/dir").to_string();
        let stranger = {
            let key = rcgen::KeyPair::generate().expect("stranger key");
            let mut params =
                rcgen::CertificateParams::new(Vec::<String>::new()).expect("stranger params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "Pebble Intermediate CA");
            params.self_signed(&key).expect("stranger cert").pem()
        };
        let proxy = Arc::new(Proxy {
            fault: Mutex::new(Fault::None),
            upstream,
            pebble: pebble_base,
            stranger,
            orders_replacing: AtomicUsize::new(0),
            orders: AtomicUsize::new(0),
        });

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let serving = proxy.clone();
        runtime.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, proxy) = (acceptor.clone(), serving.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let proxy = proxy.clone();
                        async move { Ok::<_, Infallible>(proxy.handle(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HostileCa {
            directory_url: format!("https://127.0.0.1:{port}/dir"),
            proxy,
            _runtime: runtime,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.proxy.fault.lock().expect("fault lock") = fault;
    }

    /// New orders pebble accepted or the proxy refused so far, and how many of them named the
    /// certificate they replace.
    pub fn orders(&self) -> (usize, usize) {
        (
            self.proxy.orders.load(Ordering::SeqCst),
            self.proxy.orders_replacing.load(Ordering::SeqCst),
        )
    }
}

impl Proxy {
    async fn handle(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let fault = self.fault.lock().expect("fault lock").clone();
        let path = request.uri().path().to_string();
        let new_order = path == "/order-plz";
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return respond(StatusCode::BAD_GATEWAY, e.to_string().into_bytes()),
        };
        let replacing = new_order && names_replaced(&body);
        // Orders pebble took or the proxy refused; not those pebble sent back for a new nonce
        // (it rejects a few on purpose), which the client sends again.
        let count = || {
            self.orders.fetch_add(1, Ordering::SeqCst);
            if replacing {
                self.orders_replacing.fetch_add(1, Ordering::SeqCst);
            }
        };
        match fault {
            Fault::RefuseReplaces if replacing => {
                count();
                let problem = r#"{"type":"urn:ietf:params:acme:error:alreadyReplaced","detail":"the certificate was already replaced","status":409}"#;
                return respond(StatusCode::CONFLICT, problem.into());
            }
            Fault::Silent if new_order => {
                // Held until the test drops the proxy's runtime.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Fault::BadNonces(_) if path.starts_with("/my-order/") && self.take_bad_nonce() => {
                let problem = r#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"JWS has an invalid anti-replay nonce","status":400}"#;
                return respond(StatusCode::BAD_REQUEST, problem.into());
            }
            Fault::ServerError if new_order => {
                let problem = r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"the database is on fire","status":500}"#;
                return respond(StatusCode::INTERNAL_SERVER_ERROR, problem.into());
            }
            Fault::RateLimited(seconds) if new_order => {
                let problem = r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders recently","status":429}"#;
                let mut response = respond(StatusCode::TOO_MANY_REQUESTS, problem.into());
                let value = hyper::header::HeaderValue::from(seconds);
                response
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, value);
                return response;
            }
            _ => {}
        }
        let (status, headers, body) = match self.forward(parts, body).await {
            Ok(answer) => answer,
            Err(e) => return respond(StatusCode::BAD_GATEWAY, e.into_bytes()),
        };
        if new_order && status.is_success() {
            count();
        }
        // Only successful answers are spoiled: pebble's own problems (a rejected nonce, which
        // the client retries) pass through.
        let fault = if status.is_success() {
            fault
        } else {
            Fault::None
        };
        let body = match fault {
            Fault::MalformedOrder if new_order => {
                br#"{"status": "pending", "identifiers": ["#.to_vec()
            }
            Fault::StuckProcessing
                if path.starts_with("/my-order/") || path.starts_with("/finalize-order/") =>
            {
                stuck(&body)
            }
            Fault::Certificate(pem) if path.starts_with("/certZ/") => pem.into_bytes(),
            Fault::BrokenChain if path.starts_with("/certZ/") => self.broken_chain(&body),
            Fault::WithoutChallenge(kind) if path.starts_with("/authZ/") => {
                without_challenge(&body, kind)
            }
            _ => body,
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        for (name, value) in headers.iter() {
            if name != hyper::header::CONTENT_LENGTH && name != hyper::header::TRANSFER_ENCODING {
                response.headers_mut().append(name, value.clone());
            }
        }
        response
    }

    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Result<(StatusCode, hyper::HeaderMap, Vec<u8>), String> {
        let target = format!(
            "{}{}",
            self.pebble,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut upstream = Request::builder().method(parts.method).uri(target);
        // `Host` included: pebble builds URLs and checks signed URLs from it.
        for (name, value) in parts.headers.iter() {
            upstream = upstream.header(name, value);
        }
        let request = upstream.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = self
            .upstream
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status, parts.headers, body.to_vec()))
    }

    /// Whether one more `badNonce` is due, counted down.
    fn take_bad_nonce(&self) -> bool {
        let mut fault = self.fault.lock().expect("fault lock");
        match &mut *fault {
            Fault::BadNonces(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    /// The leaf as issued, followed by an unrelated CA certificate instead of the intermediate.
    fn broken_chain(&self, body: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(body);
        let end = "-----END CERTIFICATE-----";
        let leaf = text.split_inclusive(end).next().unwrap_or_default();
        format!("{}\n{}", leaf.trim(), self.stranger).into_bytes()
    }
}

/// An order object that says `processing` where pebble said `valid`, without a certificate URL.
fn stuck(body: &[u8]) -> Vec<u8> {
    let Ok(mut order) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    if order["status"] == "valid" {
        order["status"] = "processing".into();
        if let Some(fields) = order.as_object_mut() {
            fields.remove("certificate");
        }
    }
    serde_json::to_vec(&order).unwrap_or_else(|_| body.to_vec())
}

/// Whether a JWS-signed new order names the certificate it replaces (in its payload).
fn names_replaced(jws: &[u8]) -> bool {
    use base64::Engine as _;
    let payload = serde_json::from_slice::<serde_json::Value>(jws)
        .ok()
        .and_then(|jws| jws["payload"].as_str().map(str::to_string))
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|payload| serde_json::from_slice::<serde_json::Value>(&payload).ok());
    payload.is_some_and(|order| order.get("replaces").is_some())
}

/// An authorization object without its challenges of type `kind`.
fn without_challenge(body: &[u8], kind: &str) -> Vec<u8> {
    let Ok(mut authorization) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    if let Some(challenges) = authorization["challenges"].as_array_mut() {
        challenges.retain(|challenge| challenge["type"] != kind);
    }
    serde_json::to_vec(&authorization).unwrap_or_else(|_| body.to_vec())
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// Re-reads a certkeeper config written for `pebble` so that it talks to `ca` instead, with
/// short timeouts so that a silent or stuck CA is given up on in seconds.
pub fn point_at(config: &std::path::Path, pebble: &Pebble, ca: &HostileCa) {
    let text = fs::read_to_string(config).expect("read config");
    let text = text
        .replace(&pebble.directory_url, &ca.directory_url)
        .replacen(
            "[acme]\n",
            "[acme]\nrequest_timeout_secs = 3\norder_timeout_secs = 5\n",
            1,
        );
    fs::write(config, text).expect("write config");
}
