//! The other places the pre-flight looks from: probe servers (`[preflight] remote`) and, in
//! cluster mode, the other nodes; and what this host answers when it is such a place.

use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};

use super::{Check, Finding, Preflight, Severity};
use crate::net::dns::Answer;

/// Another node of a cluster, where it takes probe requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNode {
    pub node: String,
    pub url: String,
}

/// The other nodes of a cluster as places to look from: who they are now, and how to ask one.
pub trait Peers: Send + Sync {
    fn list(
        &self,
    ) -> BoxFuture<'_, Result<Vec<PeerNode>, Box<dyn std::error::Error + Send + Sync>>>;
    /// The URL and `Authorization` value that ask `peer` to probe `name`.
    fn probe_request(
        &self,
        peer: &PeerNode,
        name: &str,
        token: &str,
        expected: &str,
    ) -> (String, String);
}

/// Where else the pre-flight looks from.
pub enum Vantage {
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
    pub(super) fn label(&self) -> String {
        match self {
            Vantage::Server { url, .. } => url.clone(),
            Vantage::Node(peer) => format!("node {}", peer.node),
        }
    }
}

impl Preflight {
    /// What a probe server sees of `name`: each address's answer to the probe token, every
    /// address probed at once.
    pub async fn outside_probe(&self, name: &str, token: &str, expected: &str) -> Vec<Finding> {
        let (v4, v6) = tokio::join!(
            self.outside_family(name, token, expected, false),
            self.outside_family(name, token, expected, true)
        );
        let mut findings = [v4, v6].concat();
        if findings.is_empty() {
            let message = format!("{name} has no A or AAAA record");
            findings.push(Finding::about(
                name,
                None,
                Check::Dns,
                Severity::Fail,
                message,
            ));
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
    pub async fn vantages(&self) -> Vec<Vantage> {
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
        let Some(peers) = &self.peers else {
            return Vec::new();
        };
        match peers.list().await {
            Ok(peers) => peers.into_iter().map(Vantage::Node).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the other nodes for the pre-flight");
                Vec::new()
            }
        }
    }

    /// What each vantage sees of `name`, asked all at once, its findings marked with where
    /// they come from.
    pub(super) async fn remote_views(
        &self,
        vantages: &[Vantage],
        name: &str,
        token: &str,
        expected: &str,
        limit: Duration,
    ) -> Vec<Finding> {
        let asks = vantages.iter().filter_map(|vantage| {
            let (url, authorization) = match vantage {
                Vantage::Server { url, secret } => {
                    crate::preflight::remote::request_to(url, secret, name, token, expected)
                }
                Vantage::Node(peer) => self
                    .peers
                    .as_ref()?
                    .probe_request(peer, name, token, expected),
            };
            Some(async move {
                let seen =
                    crate::preflight::remote::ask(&self.web, &url, &authorization, limit).await;
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
                Err(why) => findings.push(Finding::about(
                    name,
                    None,
                    Check::Reachability,
                    Severity::Warn,
                    match vantage {
                        Vantage::Server { url, .. } => {
                            format!("the probe server {url} could not be asked: {why}")
                        }
                        Vantage::Node(peer) => format!(
                            "{label} of the cluster could not be asked at {} (its cluster.probe_url): {why}",
                            peer.url
                        ),
                    },
                )),
            }
        }
        findings
    }
}
