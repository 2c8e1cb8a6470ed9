//! Cluster mode: several certkeeper nodes behind one name (an origin/edge media deployment)
//! share their certificates through etcd.
//!
//! - One node at a time holds the renewal lease: an etcd key bound to an etcd lease that the
//!   holder renews every third of its lifetime ([`lease`]). Only the holder orders. When it
//!   dies, the key goes with its lease and another node takes over.
//! - HTTP-01 answers are stored in etcd as well as in memory, so whichever node the CA's
//!   request reaches can answer it.
//! - Each issued certificate is stored in etcd with its private key sealed under the cluster
//!   secret ([`seal`]); every node installs it through its own deployment ([`sync`]).
//! - Each node with its own listener also probes for the others: their pre-flight asks it
//!   how this host's names look from where it stands ([`peers`]).
//!
//! etcd being unreachable costs renewals, never service: a node keeps its certificates and
//! renews nothing until etcd answers again.

pub mod etcd;
mod lease;
mod peers;
mod seal;
pub(crate) mod sync;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::deploy::bundle::{Bundle, LeafInfo};
use etcd::Etcd;
pub use etcd::EtcdError;
pub use lease::lead;
pub use peers::{PROBE_PATH, PeerNode, PeerProbes, announce, probe_url};
pub use seal::SealError;
use seal::Sealer;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("the cluster's copy of certificate \"{name}\" cannot be used: {reason}")]
    Record { name: String, reason: String },
}

/// A certificate as the cluster shares it: the chain in the clear, the key sealed.
#[derive(Serialize, Deserialize)]
pub struct Record {
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_after: u64,
    /// PEM, leaf first.
    pub chain: String,
    /// The PEM private key, sealed under the cluster secret with every other field but `node`
    /// as associated data ([`Record::context`]): a record altered or replayed with other dates
    /// does not open.
    pub key: String,
    /// The node that published it.
    pub node: String,
}

impl Record {
    pub fn not_after(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.not_after)
    }

    /// What the sealed key is bound to: the certificate's name, serial, expiry and chain.
    fn context(name: &str, serial: &str, not_after: u64, chain: &str) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, chain.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "certkeeper certificate v2 {name} serial {serial} not_after {not_after} chain {hex}"
        )
    }

    /// Seals `bundle`'s key for `name`, binding it to the whole record.
    fn seal(
        sealer: &Sealer,
        name: &str,
        bundle: &Bundle,
        leaf: &LeafInfo,
        node: &str,
    ) -> Result<Record, SealError> {
        let serial = leaf.serial.clone();
        let not_after = unix_seconds(leaf.not_after);
        let chain = bundle.fullchain_pem();
        let key = sealer.seal(
            bundle.key_pem().as_bytes(),
            &Record::context(name, &serial, not_after, &chain),
        )?;
        Ok(Record {
            serial,
            not_after,
            chain,
            key,
            node: node.to_string(),
        })
    }

    /// The certificate and key of this record of `name`, when the cluster secret vouches for
    /// every field and the leaf itself has the serial and expiry the record claims.
    fn open(&self, sealer: &Sealer, name: &str) -> Result<Bundle, ClusterError> {
        let context = Record::context(name, &self.serial, self.not_after, &self.chain);
        let key = sealer.open(&self.key, &context)?;
        let key = std::str::from_utf8(&key).map_err(|_| SealError::Open)?;
        let unusable = |reason: String| ClusterError::Record {
            name: name.to_string(),
            reason,
        };
        let bundle = Bundle::from_pem(&self.chain, key).map_err(|e| unusable(e.to_string()))?;
        let leaf = bundle.leaf_info().map_err(|e| unusable(e.to_string()))?;
        if leaf.serial != self.serial || unix_seconds(leaf.not_after) != self.not_after {
            return Err(unusable(format!(
                "the record names serial {} expiring {}, but its certificate is serial {} \
                 expiring {}",
                self.serial,
                crate::timefmt::utc(self.not_after()),
                leaf.serial,
                crate::timefmt::utc(leaf.not_after)
            )));
        }
        Ok(bundle)
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A handle on the cluster: cheap to clone, shared by the daemon, its renewals and the listener.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    etcd: Etcd,
    node: String,
    prefix: String,
    lease_ttl: Duration,
    sealer: Sealer,
    /// Signs and checks probe requests between nodes.
    probe_key: ring::hmac::Key,
    /// The lease this node holds while it leads; HTTP-01 answers are bound to it too.
    lease: Mutex<Option<i64>>,
    /// A lease of this node's own (its announcement as a probe, or a one-off command's): the
    /// pre-flight's probe tokens of a node that does not lead are bound to it, so that none
    /// outlives the node.
    own_lease: Mutex<Option<i64>>,
}

impl Cluster {
    pub fn new(config: &ClusterConfig) -> Result<Self, ClusterError> {
        // A request that takes a third of the lease is as good as failed: stepping down then
        // still leaves a third of the lease before another node may take over.
        let timeout = (config.lease / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
        Ok(Cluster(Arc::new(Inner {
            etcd: Etcd::new(config, timeout)?,
            node: config.node.clone(),
            prefix: config.prefix.clone(),
            lease_ttl: config.lease,
            sealer: Sealer::new(&config.secret),
            probe_key: peers::probe_key(&config.secret),
            lease: Mutex::new(None),
            own_lease: Mutex::new(None),
        })))
    }

    pub fn node(&self) -> &str {
        &self.0.node
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{name}", self.0.prefix)
    }

    /// Holds the name of the node that holds the renewal lease, bound to that lease.
    fn leader_key(&self) -> String {
        format!("{}/leader", self.0.prefix)
    }

    /// Stores an HTTP-01 answer for every node's listener, bound to the renewal lease (or,
    /// on a node that does not hold it, the node's own lease).
    pub async fn publish_token(&self, token: &str, answer: &str) -> Result<(), EtcdError> {
        let key = self.key("tokens", token);
        let lease = self.lease().or_else(|| self.own_lease());
        self.0.etcd.put(&key, answer.as_bytes(), lease).await
    }

    fn own_lease(&self) -> Option<i64> {
        self.0.own_lease.lock().ok().and_then(|lease| *lease)
    }

    fn set_own_lease(&self, lease: Option<i64>) {
        if let Ok(mut slot) = self.0.own_lease.lock() {
            *slot = lease;
        }
    }

    /// For a one-off command: a lease of `ttl` that what this command stores in etcd is bound
    /// to, until [`Cluster::release`].
    pub async fn hold(&self, ttl: Duration) -> Result<(), EtcdError> {
        let lease = self.0.etcd.grant(ttl).await?;
        self.set_own_lease(Some(lease));
        Ok(())
    }

    /// Gives this node's own lease up, and with it what is bound to it.
    pub async fn release(&self) {
        if let Some(lease) = self.own_lease() {
            self.set_own_lease(None);
            let _ = self.0.etcd.revoke(lease).await;
        }
    }

    pub async fn withdraw_token(&self, token: &str) {
        if let Err(e) = self.0.etcd.delete(&self.key("tokens", token)).await {
            tracing::debug!(error = %e, "could not withdraw an http-01 answer from etcd; it goes with the lease");
        }
    }

    /// The HTTP-01 answer for `token` that some node published, if any.
    pub async fn token(&self, token: &str) -> Option<String> {
        match self.0.etcd.get(&self.key("tokens", token)).await {
            Ok(answer) => answer.and_then(|a| String::from_utf8(a).ok()),
            // Debug only: anyone can send requests for made-up tokens.
            Err(e) => {
                tracing::debug!(error = %e, "cannot look up an http-01 answer in etcd");
                None
            }
        }
    }

    /// This node's HTTP-01 answers, shared through etcd with every node.
    pub fn shared_answers(&self) -> Arc<dyn crate::challenge::http01::SharedAnswers> {
        Arc::new(self.clone())
    }

    /// Shares a newly issued certificate (and its sealed key) with the other nodes.
    pub async fn publish(
        &self,
        name: &str,
        bundle: &Bundle,
        leaf: &LeafInfo,
    ) -> Result<(), ClusterError> {
        let record = Record::seal(&self.0.sealer, name, bundle, leaf, &self.0.node)?;
        let value = serde_json::to_vec(&record).map_err(|e| ClusterError::Record {
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        self.0
            .etcd
            .put(&self.key("certs", name), &value, None)
            .await?;
        Ok(())
    }

    /// The certificates published at revision `since` or later (0: all), by name, and the
    /// revision to ask from next time.
    pub async fn records(&self, since: i64) -> Result<(Vec<(String, Record)>, i64), ClusterError> {
        let prefix = self.key("certs", "");
        let listing = self.0.etcd.list(&prefix, since).await?;
        let mut records = Vec::new();
        for entry in listing.entries {
            let name = entry
                .key
                .strip_prefix(&prefix)
                .unwrap_or(&entry.key)
                .to_string();
            match serde_json::from_slice::<Record>(&entry.value) {
                Ok(record) => records.push((name, record)),
                Err(e) => {
                    tracing::warn!(name, error = %e, "ignoring an unreadable certificate record in etcd")
                }
            }
        }
        Ok((records, listing.revision + 1))
    }

    /// The certificate and key of `record`, unsealed and checked against the record.
    pub fn open(&self, name: &str, record: &Record) -> Result<Bundle, ClusterError> {
        record.open(&self.0.sealer, name)
    }
}

/// What `status` and `check` say about the cluster.
pub struct Inspection {
    /// The node holding the renewal lease, if any.
    pub leader: Option<String>,
    /// Certificates in etcd for the names asked about.
    pub published: usize,
    /// Certificates in etcd this node cannot use, and why (another secret, mostly).
    pub unusable: Vec<(String, String)>,
    /// The nodes that probe for the others' pre-flight.
    pub probes: Vec<String>,
}

impl Inspection {
    /// The nodes probing for the pre-flight, for a status line.
    pub fn probes_list(&self) -> String {
        match self.probes.is_empty() {
            true => "none".to_string(),
            false => self.probes.join(", "),
        }
    }
}

impl Cluster {
    /// Asks etcd who holds the lease, and whether this node can open the certificates
    /// published for `names` (the same secret as the node that published them).
    pub async fn inspect(&self, names: &[&str]) -> Result<Inspection, ClusterError> {
        let leader = self.leader().await?;
        let (records, _) = self.records(0).await?;
        let mut inspection = Inspection {
            leader,
            published: 0,
            unusable: Vec::new(),
            probes: self
                .announced()
                .await?
                .into_iter()
                .map(|p| p.node)
                .collect(),
        };
        for (name, record) in records.iter().filter(|(n, _)| names.contains(&n.as_str())) {
            inspection.published += 1;
            if let Err(e) = self.open(name, record) {
                inspection.unusable.push((name.clone(), e.to_string()));
            }
        }
        Ok(inspection)
    }
}

/// The HTTP-01 answers every node may need: the CA reaches whichever node its DNS names.
impl crate::challenge::http01::SharedAnswers for Cluster {
    fn publish<'a>(
        &'a self,
        token: &'a str,
        answer: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), Box<dyn std::error::Error + Send + Sync>>>
    {
        Box::pin(async move { Ok(self.publish_token(token, answer).await?) })
    }

    fn withdraw<'a>(&'a self, token: &'a str) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(self.withdraw_token(token))
    }

    fn lookup<'a>(&'a self, token: &'a str) -> futures_util::future::BoxFuture<'a, Option<String>> {
        Box::pin(self.token(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> Bundle {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["media.example.com".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        Bundle::from_pem(&cert.pem(), &key.serialize_pem()).unwrap()
    }

    #[test]
    fn a_record_opens_only_as_it_was_sealed() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let bundle = self_signed();
        let leaf = bundle.leaf_info().unwrap();
        let record = Record::seal(&sealer, "media", &bundle, &leaf, "n1").unwrap();
        assert!(record.open(&sealer, "media").is_ok());
        // Another name, a raised expiry, another serial, another chain: none opens.
        assert!(record.open(&sealer, "other").is_err());
        let raised = Record {
            not_after: record.not_after + 86_400 * 365,
            ..Record::seal(&sealer, "media", &bundle, &leaf, "n1").unwrap()
        };
        assert!(matches!(
            raised.open(&sealer, "media"),
            Err(ClusterError::Seal(_))
        ));
        let renamed = Record {
            serial: "01".into(),
            ..Record::seal(&sealer, "media", &bundle, &leaf, "n1").unwrap()
        };
        assert!(renamed.open(&sealer, "media").is_err());
        let other = self_signed();
        let swapped = Record {
            chain: other.fullchain_pem(),
            ..Record::seal(&sealer, "media", &bundle, &leaf, "n1").unwrap()
        };
        assert!(swapped.open(&sealer, "media").is_err());
    }
}
