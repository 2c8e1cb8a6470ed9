//! The other nodes as the pre-flight's outside view: each node with its own port-80 listener
//! announces where it answers (`PREFIX/nodes/NODE`, bound to a lease of its own), and serves
//! `GET /.well-known/certkeeper/probe` there for the other nodes: it fetches the probe token
//! from where it stands, as a `certkeeper probe-server` would.
//!
//! A request carries `Authorization: Certkeeper-Node NODE TIME MAC` (NODE and MAC in
//! base64url), an HMAC-SHA256 of the node, the time and the path with its query under a key derived from the cluster secret:
//! only nodes of the cluster can ask, and a request overheard on port 80 is good for a minute,
//! for that one probe. Cluster nodes are trusted to probe private addresses (nodes on one
//! private network are a normal set-up), which a public probe server refuses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::hmac;
use tokio::sync::Semaphore;

use super::Cluster;
use crate::net::http_server;
pub use crate::preflight::PeerNode;
use crate::preflight::Preflight;

/// Where the listener answers other nodes' probe requests.
pub const PROBE_PATH: &str = "/.well-known/certkeeper/probe";
/// How long a node's announcement outlives it.
const ANNOUNCE_TTL: Duration = Duration::from_secs(60);
/// How far a request's time may be from this node's clock.
const FRESH_FOR: u64 = 60;
/// Probes served at once; more are refused (the asking node's pre-flight says so).
const AT_ONCE: usize = 4;
const SCHEME: &str = "Certkeeper-Node";

/// The key that signs and checks probe requests between nodes.
pub(super) fn probe_key(secret: &[u8]) -> hmac::Key {
    Salt::new(HKDF_SHA256, b"certkeeper cluster v1")
        .extract(secret)
        .expand(&[b"peer probes"], hmac::HMAC_SHA256)
        .map(hmac::Key::from)
        .expect("32 bytes is a valid HKDF-SHA256 output length")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn signed_text(node: &str, time: u64, path_and_query: &str) -> String {
    format!("{node}\n{time}\n{path_and_query}")
}

impl Cluster {
    fn node_key(&self, node: &str) -> String {
        self.key("nodes", node)
    }

    /// The nodes that announced a probe URL, this one included.
    pub async fn announced(&self) -> Result<Vec<PeerNode>, super::EtcdError> {
        let prefix = self.node_key("");
        let listing = self.0.etcd.list(&prefix, 0).await?;
        Ok(listing
            .entries
            .into_iter()
            .filter_map(|entry| {
                let node = entry.key.strip_prefix(&prefix)?.to_string();
                let url = String::from_utf8(entry.value).ok()?;
                Some(PeerNode { node, url })
            })
            .collect())
    }
}

/// The other nodes (those that announced a probe URL), as places the pre-flight looks from.
impl crate::preflight::Peers for Cluster {
    fn list(
        &self,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<Vec<PeerNode>, Box<dyn std::error::Error + Send + Sync>>,
    > {
        Box::pin(async move {
            let mut peers = self.announced().await?;
            peers.retain(|peer| peer.node != self.0.node);
            Ok(peers)
        })
    }

    fn probe_request(
        &self,
        peer: &PeerNode,
        name: &str,
        token: &str,
        expected: &str,
    ) -> (String, String) {
        let path = format!("{PROBE_PATH}?name={name}&token={token}&expected={expected}");
        let authorization = sign(&self.0.probe_key, &self.0.node, unix_now(), &path);
        (format!("{}{path}", peer.url), authorization)
    }
}

/// The `Authorization` value of a request from `node` for `path_and_query` at `time` (the
/// node's name in base64url: a header holds visible ASCII only, a node name need not).
fn sign(key: &hmac::Key, node: &str, time: u64, path_and_query: &str) -> String {
    let mac = hmac::sign(key, signed_text(node, time, path_and_query).as_bytes());
    format!(
        "{SCHEME} {} {time} {}",
        B64.encode(node),
        B64.encode(mac.as_ref())
    )
}

/// Whether `authorization` was signed under `key` for `path_and_query`, within a minute of
/// `now`.
fn signed(key: &hmac::Key, authorization: &str, path_and_query: &str, now: u64) -> bool {
    let mut parts = authorization.split(' ');
    let (Some(SCHEME), Some(node), Some(time), Some(mac), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(node), Ok(time), Ok(mac)) = (B64.decode(node), time.parse::<u64>(), B64.decode(mac))
    else {
        return false;
    };
    let Ok(node) = String::from_utf8(node) else {
        return false;
    };
    now.abs_diff(time) <= FRESH_FOR
        && hmac::verify(
            key,
            signed_text(&node, time, path_and_query).as_bytes(),
            &mac,
        )
        .is_ok()
}

/// Announces `url` as this node's probe endpoint until `shutdown` completes, then withdraws
/// it. The announcement is bound to the node's own lease: a node that dies drops out of the
/// other nodes' pre-flight within a minute (and its probe tokens go with it).
pub async fn announce(cluster: Cluster, url: String, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let key = cluster.node_key(&cluster.0.node);
    loop {
        let alive = match cluster.own_lease() {
            Some(id) => cluster.0.etcd.keep_alive(id).await.unwrap_or(false),
            None => false,
        };
        if !alive {
            let lease = match cluster.0.etcd.grant(ANNOUNCE_TTL).await {
                Ok(id) => match cluster.0.etcd.put(&key, url.as_bytes(), Some(id)).await {
                    Ok(()) => {
                        tracing::debug!(url, "announced this node as a probe for the others");
                        Some(id)
                    }
                    Err(_) => None,
                },
                // The renewal lease's loop says when etcd is away.
                Err(_) => None,
            };
            cluster.set_own_lease(lease);
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(ANNOUNCE_TTL / 3) => {}
        }
    }
    cluster.release().await;
}

/// Where other nodes reach this node's listener: `configured` if set, else the listen address
/// when it is a specific one, else the address this host uses toward the first etcd endpoint
/// (the network the nodes share), on the listener's port.
pub async fn probe_url(
    configured: Option<&str>,
    listen: SocketAddr,
    endpoints: &[http::Uri],
) -> Option<String> {
    if let Some(url) = configured {
        return Some(url.to_string());
    }
    let ip = match listen.ip().is_unspecified() {
        false => listen.ip(),
        true => toward(endpoints.first()?).await?,
    };
    // A cluster all on one machine (etcd on loopback) is the one case a loopback URL serves.
    let etcd_here = endpoints.iter().all(|uri| {
        uri.host()
            .and_then(|host| host.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback())
    });
    if ip.is_loopback() && !etcd_here {
        tracing::warn!(
            "this node's listener is on a loopback address, which the other nodes cannot reach: \
             set cluster.probe_url to where they reach it (the address a proxy in front forwards from)"
        );
    }
    Some(format!("http://{}", SocketAddr::new(ip, listen.port())))
}

/// The local address of a UDP socket connected to `endpoint` (no packet is sent).
async fn toward(endpoint: &http::Uri) -> Option<IpAddr> {
    let host = endpoint
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = endpoint.port_u16().unwrap_or(2379);
    let target = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let local = match target {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let socket = tokio::net::UdpSocket::bind(local).await.ok()?;
    socket.connect(target).await.ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Answers other nodes' probe requests on this node's listener.
pub struct PeerProbes {
    cluster: Cluster,
    preflight: Preflight,
    at_once: Semaphore,
}

impl PeerProbes {
    pub fn new(cluster: Cluster, preflight: Preflight) -> Arc<Self> {
        Arc::new(PeerProbes {
            cluster,
            preflight,
            at_once: Semaphore::new(AT_ONCE),
        })
    }

    async fn answer_signed(
        &self,
        request: &Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        let refuse =
            |status, why: &str| http_server::text(status, "text/plain", format!("{why}\n"));
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_default();
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !signed(
            &self.cluster.0.probe_key,
            authorization,
            path_and_query,
            unix_now(),
        ) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "only nodes of this cluster may ask for probes (same cluster secret, clocks within a minute)",
            );
        }
        let Ok(_permit) = self.at_once.try_acquire() else {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "this node is busy with other probes",
            );
        };
        crate::preflight::remote::server::probe(
            &self.preflight,
            request.uri().query().unwrap_or_default(),
        )
        .await
    }
}

/// The other nodes' probe requests arrive on this node's HTTP-01 listener.
impl crate::challenge::http01::Route for PeerProbes {
    fn path(&self) -> &str {
        PROBE_PATH
    }

    fn answer<'a>(
        &'a self,
        request: &'a Request<hyper::body::Incoming>,
    ) -> futures_util::future::BoxFuture<'a, Response<Full<Bytes>>> {
        Box::pin(self.answer_signed(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_accepted_signed_by_the_same_secret_for_that_path_and_recently() {
        let key = probe_key(b"0123456789abcdef0123456789abcdef");
        let path = "/.well-known/certkeeper/probe?name=a.example&token=t&expected=e";
        let now = 1_800_000_000;
        let header = sign(&key, "n1", now, path);
        assert!(signed(&key, &header, path, now + 30));
        assert!(!signed(&key, &header, path, now + 61), "stale");
        assert!(!signed(
            &key,
            &header,
            &path.replace("a.example", "b.example"),
            now
        ));
        let other = probe_key(b"another secret of thirty-two bytes!!");
        assert!(!signed(&other, &header, path, now));
        let other_node = header.replace(&B64.encode("n1"), &B64.encode("n2"));
        assert!(!signed(&key, &other_node, path, now));
        // Any node name fits in the header.
        let spaced = sign(&key, "édge 1", now, path);
        assert!(spaced.is_ascii() && signed(&key, &spaced, path, now));
        assert!(!signed(&key, "Bearer x", path, now));
    }
}
