//! The HTTP-01 responder: answers `GET /.well-known/acme-challenge/<token>` from memory (in
//! cluster mode, also the other nodes' signed probe requests) and 404 for anything else.
//!
//! It sits on port 80 of machines exposed to the internet, so it is deliberately small; the
//! bounds (no keep-alive, timeouts, connection cap, no body read) are `http_server`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use futures_util::future::BoxFuture;

use crate::deploy::store::{FileMode, SafeDir, StoreError};
use crate::net::http_server;

const PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "cannot listen on {addr} for http-01: another process holds the port. If it is a running \
         `certkeeper run`, it renews by itself (see `certkeeper status`); if it is your web or media \
         server, set `webroot` on the certificate so that server serves certkeeper's answers, or \
         move certkeeper with daemon.listen (port 80 must still reach it)"
    )]
    InUse { addr: SocketAddr },
    #[error(
        "cannot listen on {addr} for http-01: permission denied; run certkeeper with \
         CAP_NET_BIND_SERVICE (the systemd unit grants it) or as root"
    )]
    Permission { addr: SocketAddr },
    #[error("cannot listen on {addr} for http-01: {source}")]
    Other {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "the CA sent an http-01 token that is not base64url ({token:?}); RFC 8555 allows only \
         letters, digits, '-' and '_', so certkeeper will not use it as a file name or path"
    )]
    BadToken { token: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot share it with the other nodes of the cluster: {0}")]
    Shared(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where answers are shared with other listeners that the CA may reach instead of this one
/// (cluster mode: etcd, read by every node).
pub trait SharedAnswers: Send + Sync {
    /// Stores `answer` for `token` before the CA is told to look.
    fn publish<'a>(
        &'a self,
        token: &'a str,
        answer: &'a str,
    ) -> BoxFuture<'a, Result<(), Box<dyn std::error::Error + Send + Sync>>>;
    /// Removes the answer once the order no longer needs it (failures only cost space).
    fn withdraw<'a>(&'a self, token: &'a str) -> BoxFuture<'a, ()>;
    /// The answer another listener published for `token`, if any.
    fn lookup<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<String>>;
}

/// One more path the listener answers besides challenges (cluster mode: the other nodes'
/// probe requests).
pub trait Route: Send + Sync {
    fn path(&self) -> &str;
    fn answer<'a>(&'a self, request: &'a Request<Incoming>)
    -> BoxFuture<'a, Response<Full<Bytes>>>;
}

/// Tokens and their key authorizations, shared by the order flow and the listener. With
/// [`SharedAnswers`] (cluster mode) they are stored there too, and a token this listener does
/// not know is looked up there: the CA may reach any node.
#[derive(Clone)]
pub struct Tokens {
    local: Arc<RwLock<HashMap<String, Answer>>>,
    /// Bumped whenever the listener serves an answer: wakes [`Publisher::answered`].
    served: Arc<tokio::sync::watch::Sender<u64>>,
    shared: Option<Arc<dyn SharedAnswers>>,
    /// Bounds the look-ups a flood of made-up tokens can cause.
    lookups: Arc<Semaphore>,
}

struct Answer {
    key_authorization: String,
    /// Whether the listener has served it (the CA has looked).
    served: AtomicBool,
}

/// Look-ups of unknown tokens in etcd at once; more wait.
const CLUSTER_LOOKUPS: usize = 32;

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            local: Arc::default(),
            served: Arc::new(tokio::sync::watch::Sender::new(0)),
            shared: None,
            lookups: Arc::new(Semaphore::new(CLUSTER_LOOKUPS)),
        }
    }
}

impl Tokens {
    /// Tokens also kept in `shared`, for the other listeners the CA may reach.
    pub fn shared(shared: Arc<dyn SharedAnswers>) -> Self {
        Tokens {
            shared: Some(shared),
            ..Tokens::default()
        }
    }

    /// A handle that publishes answers and withdraws them all when dropped.
    pub fn publisher(&self) -> Publisher {
        self.publisher_for(None)
    }

    /// A publisher that writes answers as files under `webroot` (served by another web
    /// server that holds port 80) instead of serving them itself, when `webroot` is given.
    pub fn publisher_for(&self, webroot: Option<&Path>) -> Publisher {
        Publisher {
            tokens: self.clone(),
            webroot: webroot.map(|root| Webroot {
                path: root.join(PREFIX.trim_matches('/')),
                opened: None,
            }),
            published: Vec::new(),
        }
    }
    fn local_answer(&self, token: &str) -> Option<String> {
        let map = self.local.read().ok()?;
        let answer = map.get(token)?;
        answer.served.store(true, Ordering::Relaxed);
        self.served
            .send_modify(|count| *count = count.wrapping_add(1));
        Some(answer.key_authorization.clone())
    }

    /// Whether the listener has served every one of `tokens`.
    fn all_served(&self, tokens: &[String]) -> bool {
        self.local.read().is_ok_and(|map| {
            tokens.iter().all(|token| {
                map.get(token)
                    .is_some_and(|answer| answer.served.load(Ordering::Relaxed))
            })
        })
    }

    async fn answer(&self, token: &str) -> Option<String> {
        if let Some(answer) = self.local_answer(token) {
            return Some(answer);
        }
        let shared = self.shared.as_ref()?;
        let _permit = self.lookups.acquire().await.ok()?;
        let answer = shared.lookup(token).await;
        if answer.is_some() {
            tracing::info!(
                token,
                "answered an http-01 request with another node's answer"
            );
        }
        answer
    }

    pub fn len(&self) -> usize {
        self.local.read().map(|map| map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Publisher {
    tokens: Tokens,
    webroot: Option<Webroot>,
    published: Vec<String>,
}

/// The webroot's challenge directory, opened at the first answer and kept, so every answer is
/// written and removed in the same real directory.
struct Webroot {
    path: PathBuf,
    opened: Option<SafeDir>,
}

impl Webroot {
    fn open(&mut self) -> Result<&SafeDir, StoreError> {
        let dir = match self.opened.take() {
            Some(dir) => dir,
            None => SafeDir::open(&self.path, true)?,
        };
        Ok(self.opened.insert(dir))
    }
}

impl Publisher {
    /// Publishes one answer. With a webroot, the file is written atomically (0644) under
    /// `.well-known/acme-challenge/`; a failure there is returned, since the CA would fail.
    /// In cluster mode the answer is stored in etcd before this returns, so the CA may be
    /// told to look.
    pub async fn publish(
        &mut self,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), PublishError> {
        if !is_token(token) {
            return Err(PublishError::BadToken {
                token: token.chars().take(80).collect(),
            });
        }
        match &mut self.webroot {
            Some(webroot) => {
                webroot.open()?.write_atomic(
                    token,
                    key_authorization.as_bytes(),
                    FileMode::PUBLIC,
                )?;
            }
            None => {
                if let Ok(mut map) = self.tokens.local.write() {
                    let answer = Answer {
                        key_authorization: key_authorization.to_string(),
                        served: AtomicBool::new(false),
                    };
                    map.insert(token.to_string(), answer);
                }
            }
        }
        self.published.push(token.to_string());
        if let Some(shared) = &self.tokens.shared {
            shared
                .publish(token, key_authorization)
                .await
                .map_err(PublishError::Shared)?;
        }
        Ok(())
    }
}

impl Publisher {
    /// Resolves once the listener has served every answer published here: the CA has looked,
    /// so its verdict is moments away. `None` when nothing here would tell (no answer, or the
    /// answers are files another web server serves).
    pub fn answered(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        if self.webroot.is_some() || self.published.is_empty() {
            return None;
        }
        let (tokens, published) = (self.tokens.clone(), self.published.clone());
        Some(async move {
            let mut changes = tokens.served.subscribe();
            while !tokens.all_served(&published) {
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        match &self.webroot {
            Some(webroot) => {
                for token in &self.published {
                    if let Some(dir) = &webroot.opened {
                        let _ = dir.remove(token);
                    }
                }
            }
            None => {
                if let Ok(mut map) = self.tokens.local.write() {
                    for token in &self.published {
                        map.remove(token);
                    }
                }
            }
        }
        // The shared copies go in the background.
        if let Some(shared) = self.tokens.shared.clone()
            && !self.published.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let published = std::mem::take(&mut self.published);
            runtime.spawn(async move {
                for token in published {
                    shared.withdraw(&token).await;
                }
            });
        }
    }
}
/// Binds the listener; `[::]` is bound dual-stack so IPv4 and IPv6 validations both arrive.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    http_server::bind_dual_stack(addr, 1024).map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => ListenError::InUse { addr },
        std::io::ErrorKind::PermissionDenied => ListenError::Permission { addr },
        _ => ListenError::Other { addr, source },
    })
}

/// Serves challenge answers on `listener` until `shutdown` completes, and `extra`'s path (a
/// GET) when given.
pub async fn serve(
    listener: TcpListener,
    tokens: Tokens,
    extra: Option<Arc<dyn Route>>,
    shutdown: impl Future<Output = ()>,
) {
    http_server::serve(
        listener,
        // Boxed: the answer may wait on etcd, and that future is large; inline, it would be
        // part of every idle connection's task.
        move |request| Box::pin(respond(tokens.clone(), extra.clone(), request)),
        shutdown,
    )
    .await
}

async fn respond(
    tokens: Tokens,
    extra: Option<Arc<dyn Route>>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(extra) = extra
        && request.uri().path() == extra.path()
        && request.method() == Method::GET
    {
        return extra.answer(&request).await;
    }
    let token = (request.method() == Method::GET || request.method() == Method::HEAD)
        .then(|| request.uri().path().strip_prefix(PREFIX))
        .flatten()
        .filter(|token| is_token(token));
    let answer = match token {
        Some(token) => tokens.answer(token).await,
        None => None,
    };
    match answer {
        Some(key_authorization) => {
            http_server::text(StatusCode::OK, "text/plain", key_authorization)
        }
        None => http_server::text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// ACME tokens are base64url (RFC 8555 §8.1): anything else is not worth a map lookup.
pub(crate) fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_withdrawn_on_drop() {
        let tokens = Tokens::default();
        {
            let mut publisher = tokens.publisher();
            publisher.publish("abc", "abc.thumb").await.unwrap();
            assert_eq!(tokens.answer("abc").await.as_deref(), Some("abc.thumb"));
        }
        assert!(tokens.is_empty());
    }

    #[tokio::test]
    async fn answered_resolves_once_every_answer_was_served() {
        let tokens = Tokens::default();
        let mut publisher = tokens.publisher();
        assert!(
            publisher.answered().is_none(),
            "nothing published, nothing to tell"
        );
        publisher.publish("a", "a.thumb").await.unwrap();
        publisher.publish("b", "b.thumb").await.unwrap();
        let answered = tokio::spawn(publisher.answered().unwrap());
        tokens.answer("a").await.unwrap();
        tokio::task::yield_now().await;
        assert!(!answered.is_finished(), "b was not fetched yet");
        tokens.answer("b").await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), answered)
            .await
            .expect("resolves once both were served")
            .unwrap();
        let webroot = tempfile::tempdir().unwrap();
        let mut files = tokens.publisher_for(Some(webroot.path()));
        files.publish("c", "c.thumb").await.unwrap();
        assert!(files.answered().is_none(), "another server serves files");
    }

    #[tokio::test]
    async fn a_token_that_is_a_path_is_refused_before_any_write() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let tokens = Tokens::default();
        let webroot = root.path().join("www");
        for token in ["../../victim", &victim.display().to_string(), "a/b", ""] {
            let mut publisher = tokens.publisher_for(Some(&webroot));
            let err = publisher.publish(token, "x.thumb").await.unwrap_err();
            assert!(matches!(err, PublishError::BadToken { .. }), "{err}");
            drop(publisher);
            let mut own = tokens.publisher();
            assert!(own.publish(token, "x.thumb").await.is_err());
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!webroot.exists(), "nothing written for a refused token");
        assert!(tokens.is_empty());
        // A good token is written in the webroot and removed with the publisher.
        let mut publisher = tokens.publisher_for(Some(&webroot));
        publisher.publish("Ab-_9", "Ab-_9.thumb").await.unwrap();
        let answer = webroot.join(".well-known/acme-challenge/Ab-_9");
        assert_eq!(std::fs::read_to_string(&answer).unwrap(), "Ab-_9.thumb");
        drop(publisher);
        assert!(!answer.exists());
    }

    #[test]
    fn token_alphabet() {
        assert!(is_token("Ab-_9"));
        assert!(!is_token("../etc/passwd"));
        assert!(!is_token("a.b"));
        assert!(!is_token(""));
    }
}
