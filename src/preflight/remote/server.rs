//! `certkeeper probe-server`: fetches `http://NAME/.well-known/acme-challenge/TOKEN` from where
//! it runs, for certkeepers that hold the shared secret, so that a host behind a NAT learns what
//! the CA will see.
//!
//! Not an open proxy: only that path, only on the configured port, only to public addresses
//! (loopback, private, link-local and the like are refused, at every redirect too), the names
//! resolved by the server itself; each client is rate-limited; every fetch is bounded in time
//! and size (the pre-flight's own fetch).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use crate::names::DomainName;
use crate::net::http_server::{self, Peer};
use crate::preflight::Preflight;

/// The shortest shared secret accepted: guessing it must be out of reach.
const MIN_TOKEN: usize = 16;

/// Probes each client may ask for in one window.
const PER_CLIENT: u32 = 30;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ProbeServerError {
    #[error("cannot read the token file {path}: {reason}")]
    Token {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Resolvers(#[from] crate::preflight::PreflightError),
}

/// What the server answers with.
struct Server {
    preflight: Preflight,
    secret: zeroize::Zeroizing<String>,
    /// Probes asked per client address in the current window.
    asked: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Serves probes on `listen` until SIGTERM/SIGINT.
pub async fn run(
    listen: SocketAddr,
    token_file: &std::path::Path,
    port: u16,
    resolvers: &[SocketAddr],
) -> Result<(), ProbeServerError> {
    let bad_token = |reason: String| ProbeServerError::Token {
        path: token_file.to_path_buf(),
        reason,
    };
    let secret =
        crate::config::read_secret_line(token_file).map_err(|e| bad_token(e.to_string()))?;
    if secret.len() < MIN_TOKEN {
        return Err(bad_token(format!(
            "it holds {} characters; write at least {MIN_TOKEN} random ones (for instance: \
             head -c 24 /dev/urandom | base64 > FILE), the same as the clients' remote_token_file",
            secret.len()
        )));
    }
    if let Some(warning) = crate::config::exposed_secret(token_file, "--token-file") {
        tracing::warn!("{warning}");
    }
    let preflight =
        Preflight::outside_view(resolvers, port).map_err(ProbeServerError::Resolvers)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ProbeServerError::Listen {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, port, "certkeeper probe-server is running");
    let server = Arc::new(Server {
        preflight,
        secret,
        asked: Mutex::new(HashMap::new()),
    });
    let respond = move |request: Request<hyper::body::Incoming>| {
        let server = server.clone();
        async move { server.answer(request).await }
    };
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => std::future::pending().await,
        }
    };
    http_server::serve(listener, respond, stop).await;
    Ok(())
}

impl Server {
    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let refuse =
            |status, why: &str| http_server::text(status, "text/plain", format!("{why}\n"));
        if request.uri().path() != "/probe" {
            return refuse(StatusCode::NOT_FOUND, "try /probe");
        }
        // Counted before the token is looked at, so that guesses are limited too.
        let client = request.extensions().get::<Peer>().map(|p| p.0.ip());
        if let Some(client) = client
            && !self.admit(client)
        {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "too many probes; try again in a minute",
            );
        }
        if !self.authorized(&request) {
            tracing::warn!(?client, "probe refused: wrong or missing token");
            return refuse(
                StatusCode::UNAUTHORIZED,
                "a valid Authorization: Bearer token is required",
            );
        }
        tracing::info!(?client, "probe asked for");
        probe(&self.preflight, request.uri().query().unwrap_or_default()).await
    }

    /// The bearer token, compared in constant time.
    fn authorized(&self, request: &Request<hyper::body::Incoming>) -> bool {
        let given = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let wanted = self.secret.as_bytes();
        given.len() == wanted.len()
            && given
                .bytes()
                .zip(wanted)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// Counts a probe for `client`; false once it has asked too often in this window.
    fn admit(&self, client: IpAddr) -> bool {
        let Ok(mut asked) = self.asked.lock() else {
            return false;
        };
        asked.retain(|_, (since, _)| since.elapsed() < WINDOW);
        let (_, count) = asked.entry(client).or_insert((Instant::now(), 0));
        *count += 1;
        *count <= PER_CLIENT
    }
}

/// The findings of `preflight` for the probe `query` asks for, as JSON; used by the probe
/// server and by cluster nodes probing for each other.
pub(crate) async fn probe(preflight: &Preflight, query: &str) -> Response<Full<Bytes>> {
    let Some((name, token, expected)) = parse_query(query) else {
        return http_server::text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "ask /probe?name=DOMAIN&token=TOKEN&expected=VALUE (a DNS name; tokens of letters, digits, - and _)\n",
        );
    };
    tracing::info!(name, "probing from here");
    let findings = preflight.outside_probe(&name, &token, &expected).await;
    match serde_json::to_vec(&findings) {
        Ok(body) => http_server::text(StatusCode::OK, "application/json", body),
        Err(e) => http_server::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

/// Longer than any real query: a name of 253 octets (more in UTF-8 before IDNA, but not
/// four times more) and two tokens of at most 128.
const MAX_QUERY: usize = 1024;

/// `name`, `token` and `expected` from the query, each checked: a DNS name, and tokens of the
/// base64url alphabet (nothing that could leave the challenge path).
pub fn parse_query(query: &str) -> Option<(String, String, String)> {
    let value = |key: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
    };
    let token_like = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    // The cheap checks first: a name is parsed (IDNA) only in a query that could be real.
    let (token, expected) = (value("token")?, value("expected")?);
    if query.len() > MAX_QUERY || !token_like(token) || !token_like(expected) {
        return None;
    }
    let name = DomainName::parse(value("name")?).ok()?;
    if name.is_wildcard() {
        return None;
    }
    Some((
        name.as_str().to_string(),
        token.to_string(),
        expected.to_string(),
    ))
}
