//! Bringing one node's certificates in line with the cluster's: a certificate another node
//! published that is newer than this node's is installed through the same deployment as a
//! renewal (atomic swap, outputs, reload, live check, rollback); one newer here than in etcd
//! is published by the lease holder (it was issued while etcd was unreachable).

use std::time::SystemTime;

use super::{Cluster, ClusterError, Record};
use crate::config::CertificateConfig;
use crate::deploy::bundle::{BundleError, LeafInfo};
use crate::deploy::store::{Store, StoreError};
use crate::deploy::{DeployError, deploy};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("refused the cluster's certificate, the previous one stays in place: {0}")]
    Refused(#[from] BundleError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "refused the cluster's certificate (serial {serial}, expiring {not_after}): it is not newer \
         than the one in place (expiring {current}); someone may have put an old record back in etcd"
    )]
    Older {
        serial: String,
        not_after: String,
        current: String,
    },
}

impl SyncError {
    /// Whether the cluster's record itself is at fault (it does not open, does not match its
    /// certificate or names, or is not newer than this node's), rather than this node's
    /// deployment: the lease holder then puts its own certificate back in its place.
    pub fn refuses_record(&self) -> bool {
        matches!(
            self,
            SyncError::Cluster(ClusterError::Seal(_) | ClusterError::Record { .. })
                | SyncError::Refused(_)
                | SyncError::Older { .. }
        )
    }
}

/// What to do about one certificate.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The cluster's copy is newer: install it here.
    Install,
    /// This node's copy is newer (or the cluster has none): publish it.
    Publish,
    /// Both hold the same certificate, or nothing at all.
    Same,
}

/// Compares this node's certificate with the cluster's; the later expiry wins.
pub fn compare(local: Option<&LeafInfo>, shared: Option<&Record>) -> Verdict {
    match (local, shared) {
        (None, None) => Verdict::Same,
        (None, Some(_)) => Verdict::Install,
        (Some(_), None) => Verdict::Publish,
        (Some(local), Some(shared)) if local.serial == shared.serial => Verdict::Same,
        (Some(local), Some(shared)) if shared.not_after() > local.not_after => Verdict::Install,
        (Some(_), Some(_)) => Verdict::Publish,
    }
}

/// Installs the cluster's `record` of `cert` after the same checks as a new certificate
/// from the CA; returns its expiry.
pub async fn install(
    cluster: &Cluster,
    store: &Store,
    cert: &CertificateConfig,
    record: &Record,
) -> Result<SystemTime, SyncError> {
    let bundle = cluster.open(&cert.name, record)?;
    let leaf = bundle.check(&cert.domains, SystemTime::now())?;
    let current = store.current(&cert.name)?.map(|c| c.leaf);
    refuse_older(current.as_ref(), &leaf)?;
    deploy(store, cert, &bundle).await?;
    Ok(leaf.not_after)
}

/// A certificate from the cluster replaces this node's only when it expires later: a replayed
/// record never rolls a node back to an older (perhaps revoked) certificate.
fn refuse_older(current: Option<&LeafInfo>, offered: &LeafInfo) -> Result<(), SyncError> {
    match current {
        Some(current) if offered.not_after <= current.not_after => Err(SyncError::Older {
            serial: offered.serial.clone(),
            not_after: crate::timefmt::utc(offered.not_after),
            current: crate::timefmt::utc(current.not_after),
        }),
        _ => Ok(()),
    }
}

/// Publishes this node's current certificate of `name`.
pub async fn publish_current(
    cluster: &Cluster,
    store: &Store,
    name: &str,
) -> Result<(), SyncError> {
    let Some(version) = store.current_version(name) else {
        return Ok(());
    };
    let bundle = store.load(name, &version)?;
    let leaf = bundle.leaf_info()?;
    cluster.publish(name, &bundle, &leaf).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn leaf(serial: &str, not_after: u64) -> LeafInfo {
        LeafInfo {
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH + Duration::from_secs(not_after),
            serial: serial.into(),
            names: vec![],
        }
    }

    fn record(serial: &str, not_after: u64) -> Record {
        Record {
            serial: serial.into(),
            not_after,
            chain: String::new(),
            key: String::new(),
            node: "n1".into(),
        }
    }

    #[test]
    fn an_older_certificate_is_never_installed() {
        assert!(refuse_older(None, &leaf("a", 10)).is_ok());
        assert!(refuse_older(Some(&leaf("a", 10)), &leaf("b", 20)).is_ok());
        let err = refuse_older(Some(&leaf("b", 20)), &leaf("a", 10)).unwrap_err();
        assert!(err.to_string().contains("not newer"), "{err}");
        assert!(refuse_older(Some(&leaf("b", 20)), &leaf("a", 20)).is_err());
    }

    #[test]
    fn the_later_expiry_wins() {
        assert_eq!(compare(None, None), Verdict::Same);
        assert_eq!(compare(None, Some(&record("a", 10))), Verdict::Install);
        assert_eq!(compare(Some(&leaf("a", 10)), None), Verdict::Publish);
        assert_eq!(
            compare(Some(&leaf("a", 10)), Some(&record("a", 10))),
            Verdict::Same
        );
        assert_eq!(
            compare(Some(&leaf("a", 10)), Some(&record("b", 20))),
            Verdict::Install
        );
        assert_eq!(
            compare(Some(&leaf("b", 20)), Some(&record("a", 10))),
            Verdict::Publish
        );
    }
}
