//! The renewal lease: one node at a time holds the key `PREFIX/leader`, bound to an etcd lease
//! it renews every third of its lifetime, and only that node orders certificates.

use tokio::sync::watch;

use super::{Cluster, EtcdError};

impl Cluster {
    pub(super) fn lease(&self) -> Option<i64> {
        self.0.lease.lock().ok().and_then(|lease| *lease)
    }

    fn set_lease(&self, lease: Option<i64>) {
        if let Ok(mut slot) = self.0.lease.lock() {
            *slot = lease;
        }
    }

    /// Takes the renewal lease if nobody holds it; says whether this node holds it now.
    async fn campaign(&self) -> Result<bool, EtcdError> {
        let key = self.leader_key();
        if self.0.etcd.get(&key).await?.is_some() {
            return Ok(false);
        }
        let lease = self.0.etcd.grant(self.0.lease_ttl).await?;
        if self
            .0
            .etcd
            .create(&key, self.0.node.as_bytes(), lease)
            .await?
        {
            self.set_lease(Some(lease));
            return Ok(true);
        }
        // Another node was quicker.
        let _ = self.0.etcd.revoke(lease).await;
        Ok(false)
    }

    /// The node holding the renewal lease, if any.
    pub async fn leader(&self) -> Result<Option<String>, EtcdError> {
        let holder = self.0.etcd.get(&self.leader_key()).await?;
        Ok(holder.map(|node| String::from_utf8_lossy(&node).into_owned()))
    }

    /// Gives the lease up, so that another node takes over at once rather than after it expires.
    async fn resign(&self) {
        if let Some(lease) = self.lease() {
            self.set_lease(None);
            if let Err(e) = self.0.etcd.revoke(lease).await {
                tracing::debug!(error = %e, "could not give up the renewal lease; it expires by itself");
            }
        }
    }
}

/// Holds the renewal lease whenever it can, and says on `leader` whether this node does:
/// asks for it while nobody holds it, renews it every third of its lifetime while this node
/// does, and steps down at the first renewal that fails, which is before etcd could hand it
/// to another node. Gives it up when `shutdown` completes.
pub async fn lead(
    cluster: Cluster,
    leader: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let every = cluster.0.lease_ttl / 3;
    let mut reachable = true;
    loop {
        let leading = *leader.borrow();
        let result = match leading {
            true => match cluster.lease() {
                Some(lease) => cluster.0.etcd.keep_alive(lease).await,
                None => Ok(false),
            },
            false => cluster.campaign().await,
        };
        match (&result, reachable) {
            (Err(e @ EtcdError::Unreachable { .. }), true) => {
                tracing::error!(error = %e, "etcd is unreachable: this node keeps serving its certificates and renews nothing until etcd answers again");
                reachable = false;
            }
            (Err(e), true) => {
                tracing::error!(error = %e, "etcd does not let this node in: it keeps serving its certificates and renews nothing until this is fixed (see [cluster] in the config)");
                reachable = false;
            }
            (Ok(_), false) => {
                tracing::info!("etcd answers again");
                reachable = true;
            }
            _ => {}
        }
        let now_leading = result.unwrap_or(false);
        if now_leading != leading {
            match now_leading {
                true => {
                    tracing::info!(node = %cluster.node(), "this node holds the renewal lease: it renews for the cluster")
                }
                false => {
                    cluster.set_lease(None);
                    tracing::warn!(node = %cluster.node(), "this node lost the renewal lease: it renews nothing until it holds it again");
                }
            }
            leader.send_replace(now_leading);
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if *leader.borrow() {
        cluster.resign().await;
        leader.send_replace(false);
    }
}
