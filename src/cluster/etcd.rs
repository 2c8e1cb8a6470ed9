//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/kv/range` and friends): the
//! handful of calls cluster mode needs, on the HTTP stack certkeeper already has, instead of a
//! gRPC one. Keys and values travel base64-encoded, 64-bit numbers as strings.
//!
//! Endpoints are tried in order, starting with the last one that answered; every request is
//! bounded by a timeout.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use crate::config::ClusterConfig;

/// etcd answers are small; a bigger one is not etcd's.
const MAX_ANSWER: usize = 64 << 20;
/// Keys per page of a listing (a certificate record is a few KiB), and pages at most.
const PAGE: usize = 100;
const MAX_PAGES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd is unreachable at {endpoints}: {reason}")]
    Unreachable { endpoints: String, reason: String },
    #[error("etcd refused {call}: {message}")]
    Refused { call: &'static str, message: String },
    #[error("etcd's answer to {call} could not be read: {reason}")]
    Answer { call: &'static str, reason: String },
    #[error("cannot set up the connection to etcd: {0}")]
    Setup(String),
}

/// One key and its value, as stored.
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
}

/// The keys under a prefix, and the store's revision they were read at.
pub struct Listing {
    pub entries: Vec<KeyValue>,
    pub revision: i64,
}

pub struct Etcd {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoints: Vec<http::Uri>,
    /// The endpoint that answered last.
    preferred: AtomicUsize,
    timeout: Duration,
    user: Option<(String, zeroize::Zeroizing<String>)>,
    /// The token of `user`, fetched on first use and again when etcd forgets it.
    token: Mutex<Option<String>>,
}

impl Etcd {
    pub fn new(config: &ClusterConfig, timeout: Duration) -> Result<Self, EtcdError> {
        let setup = |e: &dyn std::fmt::Display| EtcdError::Setup(e.to_string());
        let mut roots = rustls::RootCertStore::empty();
        match &config.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path).map_err(|e| setup(&e))?;
                for cert in certs {
                    roots
                        .add(cert.map_err(|e| setup(&e))?)
                        .map_err(|e| setup(&e))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(&e))?
        .with_root_certificates(roots);
        let tls = match &config.client_cert {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| setup(&format!("cluster.cert_file: {e}")))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| setup(&format!("cluster.key_file: {e}")))?;
                tls.with_client_auth_cert(chain, key)
                    .map_err(|e| setup(&e))?
            }
            None => tls.with_no_client_auth(),
        };
        let connector = crate::net::web::connector(tls, true);
        Ok(Etcd {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            endpoints: config.endpoints.clone(),
            preferred: AtomicUsize::new(0),
            timeout,
            user: config.auth.clone(),
            token: Mutex::new(None),
        })
    }

    /// The value of `key`, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        let answer = self
            .call("kv/range", json!({ "key": B64.encode(key) }))
            .await?;
        Ok(kvs(&answer, "kv/range")?
            .into_iter()
            .next()
            .map(|kv| kv.value))
    }

    /// Every key under `prefix` changed at revision `since` or later (0: all of them), read
    /// in pages at one revision, so that a thousand certificates never make one huge answer.
    pub async fn list(&self, prefix: &str, since: i64) -> Result<Listing, EtcdError> {
        let end = B64.encode(prefix_end(prefix));
        let mut from = prefix.as_bytes().to_vec();
        let mut listing = Listing {
            entries: Vec::new(),
            revision: 0,
        };
        for _ in 0..MAX_PAGES {
            let mut request = json!({
                "key": B64.encode(&from),
                "range_end": end,
                "min_mod_revision": since.to_string(),
                "limit": PAGE.to_string(),
            });
            if listing.revision > 0 {
                request["revision"] = json!(listing.revision.to_string());
            }
            let answer = self.call("kv/range", request).await?;
            if listing.revision == 0 {
                listing.revision = int(&answer["header"]["revision"]).unwrap_or(0);
            }
            let page = kvs(&answer, "kv/range")?;
            let Some(last) = page.last() else {
                break;
            };
            // The next page starts right after the last key of this one.
            from = last.key.as_bytes().to_vec();
            from.push(0);
            listing.entries.extend(page);
            if !answer["more"].as_bool().unwrap_or(false) {
                break;
            }
        }
        Ok(listing)
    }

    /// Stores `value` at `key`, bound to `lease` if given (the key goes when the lease does).
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<(), EtcdError> {
        let mut request = json!({ "key": B64.encode(key), "value": B64.encode(value) });
        if let Some(lease) = lease {
            request["lease"] = json!(lease.to_string());
        }
        self.call("kv/put", request).await.map(drop)
    }

    /// Stores `value` at `key` only if `key` does not exist; says whether it did.
    pub async fn create(&self, key: &str, value: &[u8], lease: i64) -> Result<bool, EtcdError> {
        let key = B64.encode(key);
        let answer = self
            .call(
                "kv/txn",
                json!({
                    "compare": [{ "key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
                    "success": [{ "request_put": { "key": key, "value": B64.encode(value), "lease": lease.to_string() } }],
                }),
            )
            .await?;
        Ok(answer["succeeded"].as_bool().unwrap_or(false))
    }

    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call("kv/deleterange", json!({ "key": B64.encode(key) }))
            .await
            .map(drop)
    }

    /// A new lease of `ttl`; returns its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let answer = self
            .call("lease/grant", json!({ "TTL": ttl.as_secs().to_string() }))
            .await?;
        int(&answer["ID"]).ok_or_else(|| EtcdError::Answer {
            call: "lease/grant",
            reason: "no lease id".into(),
        })
    }

    /// Renews `lease`; false when etcd no longer knows it (it expired).
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let answer = self
            .call("lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        Ok(int(&answer["result"]["TTL"]).is_some_and(|ttl| ttl > 0))
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("lease/revoke", json!({ "ID": lease.to_string() }))
            .await
            .map(drop)
    }

    /// One call (`call` is its path under `/v3/`, such as `kv/range`, and names it in
    /// errors), on the preferred endpoint first, then on each other one.
    async fn call(&self, call: &'static str, body: Value) -> Result<Value, EtcdError> {
        let mut reauthenticated = false;
        loop {
            let token = self.token(call).await?;
            match self.send(call, &body, token.as_deref()).await {
                Err(EtcdError::Refused { message, .. })
                    if !reauthenticated
                        && self.user.is_some()
                        && message.contains("auth token") =>
                {
                    // etcd forgets tokens on restart and after a while: log in again once.
                    reauthenticated = true;
                    if let Ok(mut token) = self.token.lock() {
                        *token = None;
                    }
                }
                result => return result,
            }
        }
    }

    /// The authentication token, logging in first when there is none yet.
    async fn token(&self, call: &'static str) -> Result<Option<String>, EtcdError> {
        let Some((user, password)) = &self.user else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().ok().and_then(|t| t.clone()) {
            return Ok(Some(token));
        }
        let answer = self
            .send(
                "auth/authenticate",
                &json!({ "name": user, "password": password.as_str() }),
                None,
            )
            .await?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| EtcdError::Answer {
                call,
                reason: "no authentication token".into(),
            })?
            .to_string();
        if let Ok(mut slot) = self.token.lock() {
            *slot = Some(token.clone());
        }
        Ok(Some(token))
    }

    async fn send(
        &self,
        call: &'static str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, EtcdError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut reasons = Vec::new();
        // The timeout bounds the whole call, whatever the number of endpoints (a lease holder
        // must learn that etcd is away before its lease runs out): each endpoint gets an even
        // share of what is left.
        let deadline = tokio::time::Instant::now() + self.timeout;
        for offset in 0..self.endpoints.len() {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let share = remaining / (self.endpoints.len() - offset) as u32;
            let index = (first + offset) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            let base = endpoint.to_string();
            let mut request =
                http::Request::post(format!("{}/v3/{call}", base.trim_end_matches('/')))
                    .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(token) = token {
                request = request.header(http::header::AUTHORIZATION, token);
            }
            let request = request
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| EtcdError::Setup(e.to_string()))?;
            let answer = tokio::time::timeout(share, async {
                let response = self.client.request(request).await.map_err(|e| {
                    // hyper's top-level message is terse; the source says what happened.
                    let source = std::error::Error::source(&e).map(|s| s.to_string());
                    source.unwrap_or_else(|| e.to_string())
                })?;
                let status = response.status();
                let bytes = Limited::new(response.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?
                    .to_bytes();
                Ok::<_, String>((status, bytes))
            })
            .await;
            let (status, bytes) = match answer {
                Ok(Ok(answer)) => answer,
                Ok(Err(reason)) => {
                    reasons.push(format!("{endpoint}: {reason}"));
                    continue;
                }
                Err(_) => {
                    reasons.push(format!("{endpoint}: no answer within {share:.1?}"));
                    continue;
                }
            };
            self.preferred.store(index, Ordering::Relaxed);
            let value: Value = match serde_json::from_slice(&bytes) {
                Ok(value) => value,
                // A refusal in plain text (the gateway's own checks), or not etcd at all.
                Err(_) if !status.is_success() => {
                    let text = String::from_utf8_lossy(&bytes);
                    json!({ "message": text.trim().chars().take(300).collect::<String>() })
                }
                Err(e) => {
                    return Err(EtcdError::Answer {
                        call,
                        reason: e.to_string(),
                    });
                }
            };
            if !status.is_success() || value.get("error").is_some() {
                let message = value["message"]
                    .as_str()
                    .or(value["error"].as_str())
                    .unwrap_or("no reason given");
                return Err(EtcdError::Refused {
                    call,
                    message: format!("{message} (HTTP {status})"),
                });
            }
            return Ok(value);
        }
        Err(EtcdError::Unreachable {
            endpoints: self
                .endpoints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            reason: reasons.join("; "),
        })
    }
}

/// The keys and values of a range answer.
fn kvs(answer: &Value, call: &'static str) -> Result<Vec<KeyValue>, EtcdError> {
    let bad = |reason: &str| EtcdError::Answer {
        call,
        reason: reason.to_string(),
    };
    let Some(kvs) = answer.get("kvs").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    kvs.iter()
        .map(|kv| {
            let decode = |field: &str| {
                // An empty value is left out of the answer altogether.
                B64.decode(kv[field].as_str().unwrap_or(""))
                    .map_err(|_| bad("a key or value is not base64"))
            };
            Ok(KeyValue {
                key: String::from_utf8(decode("key")?).map_err(|_| bad("a key is not UTF-8"))?,
                value: decode("value")?,
            })
        })
        .collect()
}

/// 64-bit numbers come as strings (proto3 JSON), small ones sometimes as numbers.
fn int(value: &Value) -> Option<i64> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| value.as_i64())
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/ck/certs/"), b"/ck/certs0".to_vec());
    }

    #[test]
    fn numbers_as_strings_or_numbers() {
        assert_eq!(int(&json!("7587883")), Some(7587883));
        assert_eq!(int(&json!(3)), Some(3));
        assert_eq!(int(&json!(null)), None);
    }
}
