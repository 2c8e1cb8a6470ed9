//! The daemon's side of cluster mode: whether this node holds the renewal lease, bringing its
//! certificates in line with etcd at each sync (installing what other nodes published,
//! publishing what was issued here while etcd was unreachable), and probing for the other
//! nodes' pre-flight.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Daemon;
use crate::cluster::sync::{self, Verdict};
use crate::cluster::{Cluster, PeerProbes, Record};
use crate::config::Config;
use crate::preflight::Preflight;

/// How long a node waits before trying again to install a certificate whose deployment failed.
const RETRY_INSTALL: Duration = Duration::from_secs(900);

pub struct Membership {
    pub cluster: Cluster,
    leader: watch::Receiver<bool>,
    interval: Duration,
    next_sync: Instant,
    /// The etcd revision to list changes from; 0 lists everything (on start, and when this
    /// node takes the lease, so that it never orders what another node just renewed).
    since: i64,
    /// The serial last tried per certificate, and when: one whose deployment failed here is
    /// not tried again (nor the server reloaded again) for a while, or until a newer one comes.
    tried: HashMap<String, (String, Instant)>,
    /// When to list everything again, for an install that failed (a change-only listing
    /// would not bring it back).
    retry_at: Option<Instant>,
    /// Certificates issued here that etcd does not hold yet.
    pub unpublished: HashSet<String>,
    /// The last sync failed (logged once per outage).
    failing: bool,
}

impl Membership {
    pub fn new(cluster: Cluster, leader: watch::Receiver<bool>, interval: Duration) -> Self {
        Membership {
            cluster,
            leader,
            interval,
            next_sync: Instant::now(),
            since: 0,
            tried: HashMap::new(),
            retry_at: None,
            unpublished: HashSet::new(),
            failing: false,
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// How long until the next sync is due.
    pub fn until_sync(&self) -> Duration {
        self.next_sync.saturating_duration_since(Instant::now())
    }

    /// Makes the next sync a full one, at once.
    pub fn resync(&mut self) {
        self.since = 0;
        self.next_sync = Instant::now();
    }
}

/// What one sync found in etcd, to be applied.
pub struct Fetched {
    records: HashMap<String, Record>,
    /// Every certificate was listed (not only the changed ones).
    full: bool,
}

impl Daemon {
    /// Fetches what changed in etcd, if a sync is due. May be abandoned at any point (on
    /// SIGTERM): it changes nothing on disk.
    pub(super) async fn fetch_cluster(&mut self) -> Option<Fetched> {
        let membership = self.cluster.as_mut()?;
        if !membership.until_sync().is_zero() {
            return None;
        }
        membership.next_sync = Instant::now() + membership.interval;
        if membership.retry_at.is_some_and(|at| at <= Instant::now()) {
            membership.retry_at = None;
            membership.since = 0;
        }
        let full = membership.since == 0;
        match membership.cluster.records(membership.since).await {
            Ok((records, next)) => {
                membership.failing = false;
                membership.since = next;
                Some(Fetched {
                    records: records.into_iter().collect(),
                    full,
                })
            }
            Err(e) => {
                if !membership.failing {
                    tracing::warn!(error = %e, "cannot fetch the cluster's certificates; keeping this node's");
                }
                membership.failing = true;
                None
            }
        }
    }

    /// Installs and publishes what `fetched` calls for. Not to be abandoned: a deployment,
    /// once started, finishes (each is bounded by its reload and verify timeouts).
    pub(super) async fn apply_cluster(&mut self, fetched: Fetched) {
        if let Some(mut membership) = self.cluster.take() {
            self.apply_with(&mut membership, fetched).await;
            self.cluster = Some(membership);
        }
    }

    async fn apply_with(&mut self, membership: &mut Membership, fetched: Fetched) {
        let Fetched { mut records, full } = fetched;
        let leader = membership.is_leader();
        let config = self.config.clone();
        for cert in &config.certificates {
            // A renewal running here owns the certificate until it ends.
            if self.core.slots.is_renewing(&cert.name) {
                continue;
            }
            let record = records.remove(&cert.name);
            let pending = membership.unpublished.contains(&cert.name);
            if record.is_none() && !full && !pending {
                continue;
            }
            let local = match self.store().current(&cert.name) {
                Ok(current) => current.map(|c| c.leaf),
                Err(e) => {
                    tracing::warn!(name = %cert.name, error = %e, "cannot read this node's certificate");
                    None
                }
            };
            match (sync::compare(local.as_ref(), record.as_ref()), record) {
                (Verdict::Install, Some(record)) => {
                    if membership
                        .tried
                        .get(&cert.name)
                        .is_some_and(|(serial, at)| {
                            *serial == record.serial && at.elapsed() < RETRY_INSTALL
                        })
                    {
                        continue;
                    }
                    membership
                        .tried
                        .insert(cert.name.clone(), (record.serial.clone(), Instant::now()));
                    let store = self.context.store.clone();
                    match sync::install(&membership.cluster, &store, cert, &record).await {
                        Ok(_) => tracing::info!(
                            name = %cert.name,
                            serial = %record.serial,
                            from = %record.node,
                            not_after = %crate::timefmt::utc(record.not_after()),
                            "installed the certificate another node published"
                        ),
                        Err(e) if leader && e.refuses_record() => {
                            tracing::error!(
                                name = %cert.name,
                                serial = %record.serial,
                                error = %e,
                                "refused the cluster's copy of the certificate; putting this node's back"
                            );
                            self.publish_own(membership, &cert.name).await;
                        }
                        Err(e) => {
                            tracing::error!(
                                name = %cert.name,
                                serial = %record.serial,
                                error = %e,
                                "cannot install the certificate another node published; trying again in 15 minutes"
                            );
                            membership
                                .retry_at
                                .get_or_insert(Instant::now() + RETRY_INSTALL);
                        }
                    }
                    self.core.slots.forget_plan(&cert.name);
                }
                (Verdict::Publish, _) if leader => self.publish_own(membership, &cert.name).await,
                _ => {}
            }
        }
    }

    /// Publishes this node's certificate of `name`; on failure, again at the next sync.
    async fn publish_own(&self, membership: &mut Membership, name: &str) {
        let store = self.context.store.clone();
        match sync::publish_current(&membership.cluster, &store, name).await {
            Ok(()) => {
                membership.unpublished.remove(name);
                tracing::info!(name = %name, "published this node's certificate to the cluster");
            }
            Err(e) => {
                membership.unpublished.insert(name.to_string());
                tracing::warn!(name = %name, error = %e, "cannot publish this node's certificate to the cluster; trying again at the next sync");
            }
        }
    }
}

/// Announces this node as a probe for the other nodes' pre-flight (until `stopped`), and
/// what answers their requests on the listener. Where the others reach this node is found in
/// the announcing task (it may mean a DNS lookup of etcd's host), not at start-up.
pub(super) fn announce_probe(
    cluster: &Cluster,
    config: &Config,
    stopped: impl Future<Output = ()> + Send + 'static,
    servers: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Option<Arc<PeerProbes>> {
    let settings = config.cluster.as_ref()?;
    let preflight = Preflight::peer_view(config)
        .inspect_err(|e| tracing::warn!(error = %e, "this node cannot probe for the others"))
        .ok()?;
    let (announcing, configured, listen, endpoints) = (
        cluster.clone(),
        settings.probe_url.clone(),
        config.daemon.listen,
        settings.endpoints.clone(),
    );
    servers.push(tokio::spawn(async move {
        tokio::pin!(stopped);
        let url = tokio::select! {
            url = crate::cluster::probe_url(configured.as_deref(), listen, &endpoints) => url,
            _ = &mut stopped => return,
        };
        let Some(url) = url else {
            tracing::warn!(
                "cannot tell where the other nodes reach this node's listener: set cluster.probe_url \
                 for them to use it as an outside view in their pre-flight"
            );
            return;
        };
        tracing::info!(url, "this node probes for the other nodes' pre-flight");
        crate::cluster::announce(announcing, url, stopped).await;
    }));
    Some(PeerProbes::new(cluster.clone(), preflight))
}
