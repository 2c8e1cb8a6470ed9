//! The pre-flight check: can the CA reach certkeeper for HTTP-01, for every name, over IPv4 and
//! IPv6? Each finding is one plain sentence with the fix.
//!
//! DNS (A/AAAA), whether each address belongs to this host, and a real fetch of a random probe
//! token from each address, the way the CA fetches (port 80, `Host:` the name, redirects
//! followed). It knows nothing of orders; `check` and the `auto` challenge choice use it.
//!
//! - `finding`: what it says (severity, check, one sentence);
//! - `probe`: the CA's requests made by hand: the HTTP fetch with redirects, the TLS-ALPN
//!   handshake;
//! - `vantage`: the other places that look (probe servers, the other nodes of a cluster);
//! - `remote`: asking a probe server, and (`remote::server`) being one.

pub(crate) mod stun;
pub(crate) mod tls_probe;

mod finding;
mod persist;
mod probe;
pub mod remote;
mod vantage;
mod verdict;

pub use vantage::{PeerNode, Peers};

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::Empty;
use serde::{Deserialize, Serialize};

pub use finding::{Check, Finding, Severity, clock_finding};
use probe::random_token;
pub use vantage::Vantage;
pub use verdict::Verdict;
use verdict::{nat_verdict, verdicts};

use crate::challenge::http01::Tokens;
use crate::config::Config;
use crate::net::dns::{Answer, Dns};

/// How long the pre-flight before an order may take; past it, the order goes out unchecked.
const BEFORE_ORDER_BUDGET: Duration = Duration::from_secs(5);
/// How long other vantages may take before an order: a slow one is reported as such, and
/// this host's own findings still count.
const REMOTE_BEFORE_ORDER: Duration = Duration::from_secs(4);
/// How long a name's findings stand, so a burst of renewals for one host checks it once.
const REMEMBER_FOR: Duration = Duration::from_secs(30);
/// How long the public address learned over STUN stands (a dynamic address changes rarely).
const ASK_STUN_EVERY: Duration = Duration::from_secs(300);

/// Why the pre-flight cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(transparent)]
    Resolvers(#[from] crate::net::dns::DnsError),
    #[error("preflight.remote_token_file {}: {source}", path.display())]
    RemoteToken {
        path: PathBuf,
        source: crate::config::SecretError,
    },
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
    peers: Option<std::sync::Arc<dyn Peers>>,
    web: crate::net::web::WebClient<Empty<Bytes>>,
    /// A probe server's view: fetch from public addresses only (no loopback, no private
    /// network), so that it cannot be turned against the network it runs in.
    outside_only: bool,
}

/// This host's address as a STUN server saw it, and that server.
type SeenAt = (IpAddr, String);

/// Findings, and when they were found.
type Remembered = (Instant, Vec<Finding>);

/// What findings are remembered by: the name, its webroot, and the vantages that looked (a
/// node that joins the cluster is asked at once, not after the findings expire).
type RememberedFor = (String, Option<PathBuf>, Vec<String>);

/// What the pre-flight before an order found.
#[derive(Debug, Clone, Default)]
pub struct BeforeOrder {
    pub verdicts: Vec<Verdict>,
    /// The first finding that rules HTTP-01 out, if one does.
    pub blocker: Option<String>,
}

impl Preflight {
    pub fn new(config: &Config) -> Result<Self, PreflightError> {
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
                    let read = crate::config::read_secret_line(path);
                    Some(read.map_err(|source| PreflightError::RemoteToken {
                        path: path.clone(),
                        source,
                    })?)
                }
                None => None,
            },
            peers: None,
            web: crate::net::web::client(),
            outside_only: false,
        })
    }

    /// This pre-flight, asking the other nodes of a cluster for their view when no probe
    /// server is configured.
    pub fn with_peers(mut self, peers: Option<std::sync::Arc<dyn Peers>>) -> Self {
        self.peers = peers;
        self
    }

    /// The pre-flight as a probe server runs it: names resolved through `resolvers` (the
    /// system's when empty), port `port`, public addresses only.
    pub fn outside_view(resolvers: &[SocketAddr], port: u16) -> Result<Self, PreflightError> {
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
            web: crate::net::web::client(),
            outside_only: true,
        })
    }

    /// The pre-flight as a cluster node runs it for the other nodes: this node's resolvers
    /// and port, private addresses allowed (the nodes trust each other, and often share a
    /// private network).
    pub fn peer_view(config: &Config) -> Result<Self, PreflightError> {
        let mut view = Self::outside_view(&config.daemon.resolvers, config.daemon.http01_port)?;
        view.outside_only = false;
        Ok(view)
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
            let vantages = self.vantages().await;
            for name in names {
                let findings = self.remembered(name, tokens, webroot, &vantages).await;
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
        vantages: &[Vantage],
    ) -> Vec<Finding> {
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

    /// Every finding for `name`, IPv4 and IPv6, from this host and from `vantages` (see
    /// [`Preflight::vantages`]). The probe token is served through `tokens` (certkeeper's own
    /// listener must be running).
    pub async fn check_name(
        &self,
        name: &str,
        tokens: &Tokens,
        webroot: Option<&Path>,
        vantages: &[Vantage],
    ) -> Vec<Finding> {
        let limit = crate::preflight::remote::ANSWER_TIMEOUT;
        self.check_from(name, tokens, webroot, vantages, limit)
            .await
    }

    /// Every finding for `name`, from this host and from `vantages` (each given `limit`).
    async fn check_from(
        &self,
        name: &str,
        tokens: &Tokens,
        webroot: Option<&Path>,
        vantages: &[Vantage],
        limit: Duration,
    ) -> Vec<Finding> {
        let (token, expected) = (random_token(), random_token());
        let mut publisher = tokens.publisher_for(webroot);
        if let Err(e) = publisher.publish(&token, &expected).await {
            return vec![Finding::about(
                name,
                None,
                Check::Port,
                Severity::Fail,
                format!("cannot write the probe into the webroot: {e}"),
            )];
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
            findings.push(Finding::about(
                name,
                None,
                Check::Dns,
                Severity::Fail,
                format!("{name} has no A or AAAA record: create one pointing at this host"),
            ));
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
            let (address_severity, address_message, behind_nat) = match (
                &seen,
                self.own.contains(&address),
            ) {
                (_, true) => (
                    Severity::Ok,
                    format!("{family} of {name} is {address}, an address of this host"),
                    false,
                ),
                (Some((public, server)), false) if *public == address => (
                    Severity::Ok,
                    format!(
                        "{family} of {name} is {address}, where this host is seen from outside behind a NAT \
                             (STUN server {server})"
                    ),
                    true,
                ),
                (Some((public, server)), false) => (
                    Severity::Fail,
                    format!(
                        "DNS points {name} at {address} but this host is reachable at {public} (STUN server \
                             {server}): update the {} record to {public}",
                        if v6 { "AAAA" } else { "A" }
                    ),
                    false,
                ),
                (None, false) => (
                    Severity::Warn,
                    format!(
                        "{family} of {name} is {address}, which is not an address of this host ({}); point it here, \
                             or list it in daemon.public_ip if a NAT forwards it",
                        self.own_list()
                    ),
                    false,
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
                match crate::preflight::stun::public_address(server).await {
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
}
