//! The pre-flight check: can the CA reach certkeeper for HTTP-01, for every name, over IPv4 and
//! IPv6? Each finding is one plain sentence with the fix.
//!
//! DNS (A/AAAA), whether each address belongs to this host, and a real fetch of a random probe
//! token from each address, the way the CA fetches (port 80, `Host:` the name, redirects
//! followed). It knows nothing of orders; `check` and the `auto` challenge choice use it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::challenge::http01::Tokens;
use crate::challenge::tls_alpn01::TlsAlpn01;
use crate::cluster::{Cluster, PeerNode};
use crate::config::Config;
use crate::dns::{Answer, Dns};
use crate::tls_probe::Handshake;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_REDIRECTS: usize = 5;
/// How long the pre-flight before an order may take; past it, the order goes out unchecked.
const BEFORE_ORDER_BUDGET: Duration = Duration::from_secs(5);
/// How long other vantages may take before an order: a slow one is reported as such, and
/// this host's own findings still count.
const REMOTE_BEFORE_ORDER: Duration = Duration::from_secs(4);
/// How long a name's findings stand, so a burst of renewals for one host checks it once.
const REMEMBER_FOR: Duration = Duration::from_secs(30);
/// How long the public address learned over STUN stands (a dynamic address changes rarely).
const ASK_STUN_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

impl Severity {
    /// How a line of output marks it.
    pub fn mark(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        }
    }

    /// As monitoring checks count: 0 ok, 1 warning, 2 failure.
    pub fn level(self) -> u8 {
        match self {
            Severity::Ok => 0,
            Severity::Warn => 1,
            Severity::Fail => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Dns,
    Address,
    Port,
    Reachability,
    Clock,
    /// Cluster mode: etcd and the cluster secret.
    Cluster,
    /// TLS-ALPN-01: port 443 answered by certkeeper's responder.
    #[serde(rename = "tls-alpn")]
    TlsAlpn,
}

impl Check {
    /// As the table's CHECK column shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Dns => "dns",
            Check::Address => "address",
            Check::Port => "port",
            Check::Reachability => "reachability",
            Check::Clock => "clock",
            Check::Cluster => "cluster",
            Check::TlsAlpn => "tls-alpn",
        }
    }
}

/// One thing the check found, in words an operator can act on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub name: Option<String>,
    pub address: Option<IpAddr>,
    pub check: Check,
    pub severity: Severity,
    pub message: String,
}

impl Finding {
    /// A finding about `name` (at `address`, when it is about one address).
    pub fn about(
        name: &str,
        address: Option<IpAddr>,
        check: Check,
        severity: Severity,
        message: String,
    ) -> Finding {
        Finding {
            name: Some(name.to_string()),
            address,
            check,
            severity,
            message,
        }
    }
}

pub struct Preflight {
    dns: Dns,
    port: u16,
    /// The port the CA connects to for TLS-ALPN-01.
    tls_port: u16,
    /// This host's interface addresses and the configured public ones.
    own: Vec<IpAddr>,
    /// Recent findings by name and webroot, for the pre-flight before an order.
    recent: Mutex<HashMap<RememberedFor, Remembered>>,
    /// `daemon.preflight_before_order`: whether orders wait for the pre-flight.
    before_order: bool,
    /// `preflight.stun`, and what they said lately: (address, server) answers.
    stun: Vec<String>,
    seen: tokio::sync::Mutex<Option<(Instant, Vec<SeenAt>)>>,
    /// Probe servers that fetch the token from outside, and the secret they want.
    remotes: Vec<String>,
    remote_secret: Option<zeroize::Zeroizing<String>>,
    /// In cluster mode, the other nodes look from where they stand when no probe server is
    /// configured.
    peers: Option<Cluster>,
    web: crate::web::WebClient<Empty<Bytes>>,
    /// A probe server's view: fetch from public addresses only (no loopback, no private
    /// network), so that it cannot be turned against the network it runs in.
    outside_only: bool,
}

/// Where else the pre-flight looks from.
enum Vantage {
    /// A `certkeeper probe-server`, and the secret it wants.
    Server {
        url: String,
        secret: zeroize::Zeroizing<String>,
    },
    /// Another node of the cluster.
    Node(PeerNode),
}

impl Vantage {
    /// How findings name it: "from {label}: …".
    fn label(&self) -> String {
        match self {
            Vantage::Server { url, .. } => url.clone(),
            Vantage::Node(peer) => format!("node {}", peer.node),
        }
    }
}

/// This host's address as a STUN server saw it, and that server.
type SeenAt = (IpAddr, String);

/// Findings, and when they were found.
type Remembered = (Instant, Vec<Finding>);

/// What findings are remembered by: the name, its webroot, and the vantages that looked (a
/// node that joins the cluster is asked at once, not after the findings expire).
type RememberedFor = (String, Option<PathBuf>, Vec<String>);

/// The pre-flight's verdict on one name and address family ("ipv4", "ipv6", or "dns" when
/// no address was found), as recorded before an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub name: String,
    pub family: String,
    pub ok: bool,
    /// The finding's sentence: the failure and its fix, or what passed.
    pub message: String,
}

/// What the pre-flight before an order found.
#[derive(Debug, Clone, Default)]
pub struct BeforeOrder {
    pub verdicts: Vec<Verdict>,
    /// The first finding that rules HTTP-01 out, if one does.
    pub blocker: Option<String>,
}

impl Preflight {
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut own: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
            .map(|addrs| {
                addrs
                    .filter_map(|a| {
                        let address = a.address?;
                        address
                            .as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    })
                    .collect()
            })
            .unwrap_or_default();
        own.extend(&config.daemon.public_ip);
        Ok(Self {
            dns: Dns::new(&config.daemon.resolvers)?,
            port: config.daemon.http01_port,
            tls_port: config.daemon.tls_alpn_port,
            own,
            recent: Mutex::new(HashMap::new()),
            before_order: config.daemon.preflight_before_order,
            stun: config.preflight.stun.clone(),
            seen: tokio::sync::Mutex::new(None),
            remotes: config.preflight.remote.clone(),
            remote_secret: match &config.preflight.remote_token_file {
                Some(path) => {
                    Some(crate::config::read_secret_line(path).map_err(|e| {
                        format!("preflight.remote_token_file {}: {e}", path.display())
                    })?)
                }
                None => None,
            },
            peers: None,
            web: crate::web::client(),
            outside_only: false,
        })
    }

    /// This pre-flight, asking the other nodes of `cluster` for their view when no probe
    /// server is configured.
    pub fn with_peers(mut self, cluster: Option<Cluster>) -> Self {
        self.peers = cluster;
        self
    }

    /// The pre-flight as a probe server runs it: names resolved through `resolvers` (the
    /// system's when empty), port `port`, public addresses only.
    pub fn outside_view(resolvers: &[SocketAddr], port: u16) -> Result<Self, String> {
        Ok(Self {
            dns: Dns::new(resolvers)?,
            port,
            tls_port: 443,
            own: Vec::new(),
            recent: Mutex::new(HashMap::new()),
            before_order: false,
            stun: Vec::new(),
            seen: tokio::sync::Mutex::new(None),
            remotes: Vec::new(),
            remote_secret: None,
            peers: None,
            web: crate::web::client(),
            outside_only: true,
        })
    }

    /// The pre-flight as a cluster node runs it for the other nodes: this node's resolvers
    /// and port, private addresses allowed (the nodes trust each other, and often share a
    /// private network).
    pub fn peer_view(config: &Config) -> Result<Self, String> {
        let mut view = Self::outside_view(&config.daemon.resolvers, config.daemon.http01_port)?;
        view.outside_only = false;
        Ok(view)
    }

    /// The first reason TLS-ALPN-01 cannot succeed for `names`, if there is one: the CA's
    /// `acme-tls/1` handshake on port 443 of each address, answered by `responder` with a
    /// probe certificate whose digest only this check knows.
    pub async fn tls_alpn_blocker(&self, names: &[&str], responder: &TlsAlpn01) -> Option<String> {
        let mut publisher = match responder.publisher() {
            Ok(publisher) => publisher,
            Err(e) => return Some(e.to_string()),
        };
        let port = self.tls_port;
        for name in names {
            let digest: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
            if let Err(e) = publisher.publish(name, &digest) {
                return Some(e.to_string());
            }
            let mut any_address = false;
            for v6 in [false, true] {
                let Answer::Found(addresses) = self.addresses(name, v6).await else {
                    continue;
                };
                for address in addresses {
                    any_address = true;
                    let at = SocketAddr::new(address, port);
                    let problem = match crate::tls_probe::handshake(at, name).await {
                        Handshake::Answered(Some(found)) if found == digest => continue,
                        Handshake::Answered(_) => format!(
                            "port {port} on {address} is answered by another TLS server, not certkeeper's \
                             tls-alpn-01 responder: a web or media server holds the port, or a proxy does \
                             not route acme-tls/1 to certkeeper"
                        ),
                        Handshake::Refused => format!(
                            "port {port} on {address} refused the connection: open it in the firewall (and \
                             forward it on a NAT), or point daemon.tls_alpn_listen at it"
                        ),
                        Handshake::Timeout => format!(
                            "port {port} on {address} timed out: a firewall drops it, a NAT has no port \
                             forward, or the ISP blocks it"
                        ),
                        Handshake::Failed(why) => format!("port {port} on {address}: {why}"),
                    };
                    return Some(problem);
                }
            }
            if !any_address {
                return Some(format!("{name} has no A or AAAA record"));
            }
        }
        None
    }

    /// What a probe server sees of `name`: each address's answer to the probe token, every
    /// address probed at once.
    pub async fn outside_probe(&self, name: &str, token: &str, expected: &str) -> Vec<Finding> {
        let (v4, v6) = tokio::join!(
            self.outside_family(name, token, expected, false),
            self.outside_family(name, token, expected, true)
        );
        let mut findings = [v4, v6].concat();
        if findings.is_empty() {
            findings.push(Finding {
                name: Some(name.to_string()),
                address: None,
                check: Check::Dns,
                severity: Severity::Fail,
                message: format!("{name} has no A or AAAA record"),
            });
        }
        findings
    }

    async fn outside_family(
        &self,
        name: &str,
        token: &str,
        expected: &str,
        v6: bool,
    ) -> Vec<Finding> {
        let addresses = match self.addresses(name, v6).await {
            Answer::Found(addresses) => addresses,
            Answer::NoRecords => return Vec::new(),
            other => {
                let message = format!("the lookup of {name} failed: {other}");
                return vec![Finding::about(
                    name,
                    None,
                    Check::Dns,
                    Severity::Fail,
                    message,
                )];
            }
        };
        let probes = join_all(
            addresses
                .iter()
                .map(|&address| self.probe(name, address, token, expected)),
        )
        .await;
        addresses
            .into_iter()
            .zip(probes)
            .map(|(address, (severity, message))| {
                Finding::about(name, Some(address), Check::Reachability, severity, message)
            })
            .collect()
    }

    /// Where the pre-flight looks from besides this host: the configured probe servers, or
    /// else, in cluster mode, the other nodes.
    async fn vantages(&self) -> Vec<Vantage> {
        if let Some(secret) = &self.remote_secret
            && !self.remotes.is_empty()
        {
            return self
                .remotes
                .iter()
                .map(|server| Vantage::Server {
                    url: server.clone(),
                    secret: secret.clone(),
                })
                .collect();
        }
        let Some(cluster) = &self.peers else {
            return Vec::new();
        };
        match cluster.peers().await {
            Ok(peers) => peers.into_iter().map(Vantage::Node).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the other nodes for the pre-flight");
                Vec::new()
            }
        }
    }

    /// What each vantage sees of `name`, asked all at once, its findings marked with where
    /// they come from.
    async fn remote_views(
        &self,
        vantages: Vec<Vantage>,
        name: &str,
        token: &str,
        expected: &str,
        limit: Duration,
    ) -> Vec<Finding> {
        let asks = vantages.into_iter().filter_map(|vantage| {
            let (url, authorization) = match &vantage {
                Vantage::Server { url, secret } => {
                    crate::remote_probe::request_to(url, secret, name, token, expected)
                }
                Vantage::Node(peer) => self
                    .peers
                    .as_ref()?
                    .probe_request(peer, name, token, expected),
            };
            Some(async move {
                let seen = crate::remote_probe::ask(&self.web, &url, &authorization, limit).await;
                (vantage, seen)
            })
        });
        let answers = join_all(asks).await;
        let mut findings = Vec::new();
        for (vantage, seen) in answers {
            let label = vantage.label();
            match seen {
                Ok(seen) => findings.extend(seen.into_iter().map(|mut finding| {
                    finding.message = format!("from {label}: {}", finding.message);
                    finding
                })),
                Err(why) => findings.push(Finding {
                    name: Some(name.to_string()),
                    address: None,
                    check: Check::Reachability,
                    severity: Severity::Warn,
                    message: match vantage {
                        Vantage::Server { url, .. } => {
                            format!("the probe server {url} could not be asked: {why}")
                        }
                        Vantage::Node(peer) => format!(
                            "{label} of the cluster could not be asked at {} (its cluster.probe_url): {why}",
                            peer.url
                        ),
                    },
                }),
            }
        }
        findings
    }

    /// The addresses of `name` of one family: looked up in DNS, or the address itself for
    /// an IP identifier.
    async fn addresses(&self, name: &str, v6: bool) -> Answer<IpAddr> {
        match name.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv6() == v6 => Answer::Found(vec![ip]),
            Ok(_) => Answer::NoRecords,
            Err(_) => self.dns.addresses(name, v6).await,
        }
    }

    /// Whether orders wait for the pre-flight (`daemon.preflight_before_order`).
    pub fn runs_before_orders(&self) -> bool {
        self.before_order
    }

    /// The pre-flight before an order for `names`: bounded in time, and remembered for a short
    /// while so that a burst of renewals of one host does not repeat it.
    pub async fn before_order(
        &self,
        names: &[&str],
        tokens: &Tokens,
        webroot: Option<&Path>,
    ) -> Option<BeforeOrder> {
        if !self.before_order {
            return None;
        }
        let checks = async {
            let mut found = BeforeOrder::default();
            for name in names {
                let findings = self.remembered(name, tokens, webroot).await;
                if found.blocker.is_none() {
                    found.blocker = findings
                        .iter()
                        .find(|f| f.severity == Severity::Fail)
                        .map(|f| f.message.clone());
                }
                found.verdicts.extend(verdicts(name, &findings));
            }
            found
        };
        Some(
            match tokio::time::timeout(BEFORE_ORDER_BUDGET, checks).await {
                Ok(found) => found,
                Err(_) => {
                    tracing::warn!(
                        names = ?names,
                        "the pre-flight did not finish within {}s; ordering without it",
                        BEFORE_ORDER_BUDGET.as_secs()
                    );
                    BeforeOrder::default()
                }
            },
        )
    }

    async fn remembered(
        &self,
        name: &str,
        tokens: &Tokens,
        webroot: Option<&Path>,
    ) -> Vec<Finding> {
        let vantages = self.vantages().await;
        let key = (
            name.to_string(),
            webroot.map(Path::to_path_buf),
            vantages.iter().map(Vantage::label).collect(),
        );
        let fresh = |(at, _): &Remembered| at.elapsed() < REMEMBER_FOR;
        if let Ok(recent) = self.recent.lock()
            && let Some(entry) = recent.get(&key).filter(|e| fresh(e))
        {
            return entry.1.clone();
        }
        let findings = self
            .check_from(name, tokens, webroot, vantages, REMOTE_BEFORE_ORDER)
            .await;
        if let Ok(mut recent) = self.recent.lock() {
            recent.retain(|_, entry| fresh(entry));
            recent.insert(key, (Instant::now(), findings.clone()));
        }
        findings
    }

    /// Every finding for `name`, IPv4 and IPv6. The probe token is served through `tokens`
    /// (certkeeper's own listener must be running).
    pub async fn check_name(
        &self,
        name: &str,
        tokens: &Tokens,
        webroot: Option<&Path>,
    ) -> Vec<Finding> {
        let vantages = self.vantages().await;
        let limit = crate::remote_probe::ANSWER_TIMEOUT;
        self.check_from(name, tokens, webroot, vantages, limit)
            .await
    }

    /// Every finding for `name`, from this host and from `vantages` (each given `limit`).
    async fn check_from(
        &self,
        name: &str,
        tokens: &Tokens,
        webroot: Option<&Path>,
        vantages: Vec<Vantage>,
        limit: Duration,
    ) -> Vec<Finding> {
        let (token, expected) = (random_token(), random_token());
        let mut publisher = tokens.publisher_for(webroot);
        if let Err(e) = publisher.publish(&token, &expected).await {
            return vec![Finding {
                name: Some(name.to_string()),
                address: None,
                check: Check::Port,
                severity: Severity::Fail,
                message: format!("cannot write the probe into the webroot: {e}"),
            }];
        }
        let labelled = !vantages.is_empty();
        let ((mut findings, any_address), remote) = tokio::join!(
            self.local_view(name, &token, &expected, labelled),
            self.remote_views(vantages, name, &token, &expected, limit)
        );
        if any_address {
            let resolved_here: Vec<IpAddr> = findings.iter().filter_map(|f| f.address).collect();
            findings.extend(remote.into_iter().map(|mut finding| {
                if let Some(address) = finding.address.filter(|a| !resolved_here.contains(a)) {
                    finding.message.push_str(&format!(
                        " (there, {name} resolves to {address}, here it does not: DNS answers differently \
                         inside and outside, or a change has not reached every resolver yet)"
                    ));
                }
                finding
            }));
        }
        if !any_address && findings.is_empty() {
            findings.push(Finding {
                name: Some(name.to_string()),
                address: None,
                check: Check::Dns,
                severity: Severity::Fail,
                message: format!(
                    "{name} has no A or AAAA record: create one pointing at this host"
                ),
            });
        }
        findings
    }

    /// What this host finds of `name`: DNS, whose addresses they are, and the probe fetched
    /// from each (its messages start "from this host" when other vantages speak too); and
    /// whether `name` has any address.
    async fn local_view(
        &self,
        name: &str,
        token: &str,
        expected: &str,
        labelled: bool,
    ) -> (Vec<Finding>, bool) {
        // Both families at once: a firewall that drops both costs one probe timeout, not two.
        let (v4, v6) = tokio::join!(
            self.family_view(name, token, expected, labelled, false),
            self.family_view(name, token, expected, labelled, true)
        );
        match (v4, v6) {
            (Err(nxdomain), _) => (vec![nxdomain], false),
            (Ok((findings, any)), Err(nxdomain)) => ([findings, vec![nxdomain]].concat(), any),
            (Ok((v4, any_v4)), Ok((v6, any_v6))) => ([v4, v6].concat(), any_v4 || any_v6),
        }
    }

    /// One address family of [`Self::local_view`]: its findings and whether it has addresses,
    /// or the finding that the name does not exist at all.
    async fn family_view(
        &self,
        name: &str,
        token: &str,
        expected: &str,
        labelled: bool,
        v6: bool,
    ) -> Result<(Vec<Finding>, bool), Finding> {
        let mut findings = Vec::new();
        let family = if v6 { "AAAA (IPv6)" } else { "A (IPv4)" };
        let finding = |severity, address, check, message| {
            Finding::about(name, address, check, severity, message)
        };
        let addresses = match self.addresses(name, v6).await {
            Answer::Found(addresses) => addresses,
            Answer::NoRecords => return Ok((findings, false)),
            Answer::NxDomain => {
                return Err(finding(
                    Severity::Fail,
                    None,
                    Check::Dns,
                    format!(
                        "{name} does not exist in DNS (NXDOMAIN): create an A or AAAA record pointing at this host"
                    ),
                ));
            }
            other => {
                findings.push(finding(
                    Severity::Fail,
                    None,
                    Check::Dns,
                    format!("the {family} lookup of {name} failed: {other}; check the zone's name servers"),
                ));
                return Ok((findings, false));
            }
        };
        let seen = self.seen_from_outside(v6).await;
        // Every address at once: each probe may wait out a timeout.
        let probes = join_all(
            addresses
                .iter()
                .map(|&address| self.probe(name, address, token, expected)),
        )
        .await;
        for (address, (mut severity, mut message)) in addresses.into_iter().zip(probes) {
            let behind_nat = !self.own.contains(&address)
                && seen.as_ref().is_some_and(|(public, _)| *public == address);
            let (address_severity, address_message) = match (&seen, self.own.contains(&address)) {
                (_, true) => (
                    Severity::Ok,
                    format!("{family} of {name} is {address}, an address of this host"),
                ),
                (Some((public, server)), false) if *public == address => (
                    Severity::Ok,
                    format!(
                        "{family} of {name} is {address}, where this host is seen from outside behind a NAT \
                         (STUN server {server})"
                    ),
                ),
                (Some((public, server)), false) => (
                    Severity::Fail,
                    format!(
                        "DNS points {name} at {address} but this host is reachable at {public} (STUN server \
                         {server}): update the {} record to {public}",
                        if v6 { "AAAA" } else { "A" }
                    ),
                ),
                (None, false) => (
                    Severity::Warn,
                    format!(
                        "{family} of {name} is {address}, which is not an address of this host ({}); point it here, \
                         or list it in daemon.public_ip if a NAT forwards it",
                        self.own_list()
                    ),
                ),
            };
            findings.push(finding(
                address_severity,
                Some(address),
                Check::Address,
                address_message,
            ));
            if behind_nat {
                (severity, message) = nat_verdict(severity, message, address, self.port);
            }
            if labelled {
                message = format!("from this host: {message}");
            }
            findings.push(finding(
                severity,
                Some(address),
                Check::Reachability,
                message,
            ));
        }
        Ok((findings, true))
    }

    /// This host's public address of one family as the configured STUN servers see it (asked
    /// at most every few minutes), and which server said so.
    async fn seen_from_outside(&self, v6: bool) -> Option<(IpAddr, String)> {
        if self.stun.is_empty() {
            return None;
        }
        let mut seen = self.seen.lock().await;
        if seen
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() > ASK_STUN_EVERY)
        {
            let mut answers = Vec::new();
            for server in &self.stun {
                match crate::stun::public_address(server).await {
                    Ok(address) => answers.push((address, server.clone())),
                    Err(e) => {
                        tracing::warn!(error = %e, "the pre-flight cannot learn this host's public address")
                    }
                }
            }
            *seen = Some((Instant::now(), answers));
        }
        seen.as_ref()?
            .1
            .iter()
            .find(|(address, _)| address.is_ipv6() == v6)
            .cloned()
    }

    fn own_list(&self) -> String {
        let shown: Vec<String> = self
            .own
            .iter()
            .filter(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string())
            .collect();
        if shown.is_empty() {
            "it has only loopback addresses".into()
        } else {
            format!("it has {}", shown.join(", "))
        }
    }

    /// Fetches the probe token from `address` as the CA would, following redirects.
    async fn probe(
        &self,
        name: &str,
        address: IpAddr,
        token: &str,
        expected: &str,
    ) -> (Severity, String) {
        let port = self.port;
        let mut target = (
            SocketAddr::new(address, port),
            name.to_string(),
            format!("/.well-known/acme-challenge/{token}"),
        );
        for _ in 0..=MAX_REDIRECTS {
            let (socket, host, path) = &target;
            if self.outside_only
                && let Some(kind) = not_public(socket.ip())
            {
                return (
                    Severity::Fail,
                    format!(
                        "refused to fetch from {} ({kind}): a probe server fetches from public addresses only",
                        socket.ip()
                    ),
                );
            }
            let response = match fetch(*socket, host, path).await {
                Ok(response) => response,
                Err(FetchError::Refused) => {
                    return (
                        Severity::Fail,
                        format!(
                            "port {port} on {} refused the connection: nothing listens there, or a firewall rejects \
                             it; open it in the firewall (and forward it on a NAT) or use dns-01",
                            socket.ip()
                        ),
                    );
                }
                Err(FetchError::Timeout) => {
                    return (
                        Severity::Fail,
                        format!(
                            "port {port} on {} timed out: a firewall drops it, a NAT has no port forward, or the ISP \
                             blocks port {port}; open it or use dns-01{}",
                            socket.ip(),
                            if socket.is_ipv6() {
                                " (the CA tries IPv6 first: fix IPv6 or remove the AAAA record)"
                            } else {
                                ""
                            }
                        ),
                    );
                }
                Err(FetchError::Other(why)) => {
                    return (
                        Severity::Fail,
                        format!("port {port} on {}: {why}", socket.ip()),
                    );
                }
            };
            if response.status.is_redirection() {
                let Some(location) = response.location.as_deref() else {
                    return (
                        Severity::Fail,
                        format!("{} answered a redirect without a Location", socket.ip()),
                    );
                };
                match self.redirect_target(location, host).await {
                    Ok(next) => {
                        target = next;
                        continue;
                    }
                    Err(message) => return (Severity::Warn, message),
                }
            }
            if response.status.is_success() && response.body.trim() == expected {
                return (
                    Severity::Ok,
                    format!(
                        "http://{name}:{port}/ on {address} serves certkeeper's probe token: http-01 can succeed"
                    ),
                );
            }
            let server = response
                .server
                .map(|s| format!(", server \"{s}\""))
                .unwrap_or_default();
            return (
                Severity::Fail,
                format!(
                    "port {port} on {} is answered by another HTTP server (HTTP {}{server}), not certkeeper: \
                     stop it or give certkeeper the port, or use dns-01",
                    socket.ip(),
                    response.status.as_u16()
                ),
            );
        }
        (
            Severity::Fail,
            format!("more than {MAX_REDIRECTS} redirects from {address}: the CA gives up too"),
        )
    }

    async fn redirect_target(
        &self,
        location: &str,
        host: &str,
    ) -> Result<(SocketAddr, String, String), String> {
        let uri: http::Uri = location
            .parse()
            .map_err(|_| format!("redirect to an unreadable Location \"{location}\""))?;
        match uri.scheme_str() {
            None => {
                let address = self.first_address(host).await?;
                Ok((
                    SocketAddr::new(address, self.port),
                    host.to_string(),
                    uri.path().to_string(),
                ))
            }
            Some("http") => {
                let next_host = uri.host().unwrap_or(host).to_string();
                let address = self.first_address(&next_host).await?;
                let port = uri.port_u16().unwrap_or(80);
                Ok((
                    SocketAddr::new(address, port),
                    next_host,
                    uri.path().to_string(),
                ))
            }
            Some(_) => Err(format!(
                "redirected to {location}: the CA follows redirects to HTTPS, but certkeeper cannot check that \
                 one; make sure it serves /.well-known/acme-challenge/ from certkeeper"
            )),
        }
    }

    async fn first_address(&self, host: &str) -> Result<IpAddr, String> {
        for v6 in [false, true] {
            if let Answer::Found(addresses) = self.addresses(host, v6).await
                && let Some(address) = addresses.first()
            {
                return Ok(*address);
            }
        }
        Err(format!("redirected to {host}, which has no address"))
    }
}

/// Findings about the clock, from the offset to the CA's `Date` header.
pub fn clock_finding(offset_seconds: i64) -> Finding {
    let (severity, message) = if offset_seconds.abs() > 30 {
        (
            Severity::Warn,
            format!(
                "this host's clock is {}s {} the CA's: fix the time (timedatectl set-ntp true); a skewed clock \
                 rejects fresh certificates and mistimes renewals",
                offset_seconds.abs(),
                if offset_seconds > 0 {
                    "ahead of"
                } else {
                    "behind"
                }
            ),
        )
    } else {
        (
            Severity::Ok,
            format!(
                "this host's clock is within {}s of the CA's",
                offset_seconds.abs().max(1)
            ),
        )
    };
    Finding {
        name: None,
        address: None,
        check: Check::Clock,
        severity,
        message,
    }
}

struct Fetched {
    status: http::StatusCode,
    location: Option<String>,
    server: Option<String>,
    body: String,
}

enum FetchError {
    Refused,
    Timeout,
    Other(String),
}

/// One GET with `Host: host`, bounded in time and size.
async fn fetch(socket: SocketAddr, host: &str, path: &str) -> Result<Fetched, FetchError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(socket))
        .await
    {
        Err(_) => return Err(FetchError::Timeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(FetchError::Refused);
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => return Err(FetchError::Timeout),
        Ok(Err(e)) => return Err(FetchError::Other(format!("cannot connect: {e}"))),
        Ok(Ok(stream)) => stream,
    };
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "certkeeper-check")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(String::from)
        };
        let (status, location, server) = (
            response.status(),
            header(http::header::LOCATION),
            header(http::header::SERVER),
        );
        let body = Limited::new(response.into_body(), 16 * 1024)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).to_string())
            .unwrap_or_default();
        driver.abort();
        Ok::<_, String>(Fetched {
            status,
            location,
            server,
            body,
        })
    };
    match tokio::time::timeout(RESPONSE_TIMEOUT, exchange).await {
        Err(_) => Err(FetchError::Other(format!(
            "connected, but no HTTP answer within {}s",
            RESPONSE_TIMEOUT.as_secs()
        ))),
        Ok(Err(why)) => Err(FetchError::Other(format!(
            "connected, but the HTTP exchange failed: {why}"
        ))),
        Ok(Ok(fetched)) => Ok(fetched),
    }
}

fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..32)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// One verdict per address family that `findings` (all about `name`) speak of.
fn verdicts(name: &str, findings: &[Finding]) -> Vec<Verdict> {
    let family = |f: &Finding| match f.address {
        Some(IpAddr::V4(_)) => "ipv4",
        Some(IpAddr::V6(_)) => "ipv6",
        None => "dns",
    };
    let mut verdicts: Vec<Verdict> = Vec::new();
    // Address findings back the reachability ones; a reachability finding without an address
    // is a vantage that could not be asked, which says nothing of the name.
    let counted = |f: &&Finding| {
        f.check != Check::Address && !(f.check == Check::Reachability && f.address.is_none())
    };
    for finding in findings.iter().filter(counted) {
        let family = family(finding);
        let ok = finding.severity != Severity::Fail;
        match verdicts.iter_mut().find(|v| v.family == family) {
            Some(verdict) if verdict.ok && !ok => {
                verdict.ok = false;
                verdict.message = finding.message.clone();
            }
            Some(_) => {}
            None => verdicts.push(Verdict {
                name: name.to_string(),
                family: family.to_string(),
                ok,
                message: finding.message.clone(),
            }),
        }
    }
    verdicts
}

/// The reachability verdict at `address`, where DNS points and where this host is seen from
/// outside behind a NAT: a failure there is the router's port forward.
fn nat_verdict(
    severity: Severity,
    message: String,
    address: IpAddr,
    port: u16,
) -> (Severity, String) {
    match severity {
        Severity::Fail => (
            Severity::Fail,
            format!(
                "DNS answers {address} and this host is seen from outside as {address} behind a NAT, but port \
                 {port} of {address} does not answer ({}): your router does not forward TCP {port} to this \
                 host: forward it, or configure dns01",
                message.split(':').next().unwrap_or(&message)
            ),
        ),
        _ => (
            severity,
            format!(
                "{message} (through the router's own address: hairpin NAT; the CA's view from outside may differ)"
            ),
        ),
    }
}

/// Why `ip` is no public address, if it is not: what a probe server must never fetch from.
fn not_public(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_private() => Some("a private network"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() => {
            Some("not a host address")
        }
        // 100.64.0.0/10, carrier-grade NAT.
        IpAddr::V4(v4) if v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) => {
            Some("carrier-grade NAT")
        }
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => Some("not a host address"),
        IpAddr::V6(v6) if v6.is_unique_local() => Some("a private network"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(address: Option<&str>, check: Check, severity: Severity, message: &str) -> Finding {
        Finding {
            name: Some("media.example.com".into()),
            address: address.map(|a| a.parse().unwrap()),
            check,
            severity,
            message: message.into(),
        }
    }

    #[test]
    fn a_family_fails_on_any_vantage_and_an_unasked_vantage_is_no_verdict() {
        let findings = [
            finding(
                Some("192.0.2.7"),
                Check::Address,
                Severity::Ok,
                "an address of this host",
            ),
            finding(
                Some("192.0.2.7"),
                Check::Reachability,
                Severity::Ok,
                "from this host: ok",
            ),
            finding(
                Some("192.0.2.9"),
                Check::Reachability,
                Severity::Fail,
                "from node n1: refused",
            ),
            finding(
                None,
                Check::Reachability,
                Severity::Warn,
                "node n2 could not be asked",
            ),
        ];
        let verdicts = verdicts("media.example.com", &findings);
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert_eq!(verdicts[0].family, "ipv4");
        assert!(!verdicts[0].ok);
        assert_eq!(verdicts[0].message, "from node n1: refused");
    }
}
