//! Putting a checked certificate into service without ever leaving the server worse off:
//! install (atomic swap of `current`), copy to single output files, reload, verify each live
//! endpoint serves the new chain, and roll back to the previous version when it does not.
//!
//! It does not know how the certificate was obtained.

pub mod bundle;
pub(crate) mod hook;
pub(crate) mod reload;
pub(crate) mod store;
pub mod verify;

use std::time::Duration;

use crate::config::CertificateConfig;
use crate::deploy::bundle::Bundle;
use reload::ReloadError;
use store::{Installed, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The new certificate is in place, but the reload failed and no endpoint is configured to
    /// tell whether the server picked it up.
    #[error("the new certificate is in place, but {0}")]
    Reload(ReloadError),
    #[error(
        "{reason}; rolled back to version {previous} (the new version {kept} is kept for inspection)"
    )]
    RolledBack {
        reason: String,
        previous: String,
        kept: String,
    },
    #[error("{reason}; and the rollback to version {previous} failed too: {rollback}")]
    RollbackFailed {
        reason: String,
        previous: String,
        #[source]
        rollback: Box<RollbackError>,
    },
    #[error("{0}; there is no earlier certificate to roll back to, so the new one stays")]
    NotServed(String),
}

/// Why the previous certificate could not be put back in service.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reloaded, but an endpoint does not serve the previous certificate either.
    #[error(transparent)]
    NotServed(verify::VerifyError),
    #[error("{reload}; {not_served}")]
    Neither {
        reload: ReloadError,
        #[source]
        not_served: verify::VerifyError,
    },
}

/// Deploys `bundle` for `cert`; see the module comment for the steps.
pub async fn deploy(
    store: &Store,
    cert: &CertificateConfig,
    bundle: &Bundle,
) -> Result<Installed, DeployError> {
    // Refuse unsafe output directories before anything changes.
    store::check_output_dirs(&cert.output)?;
    let installed = {
        let (store, cert, bundle) = (store.clone(), cert.clone(), bundle.clone());
        off_the_runtime(move || store.install(&cert.name, &bundle, &cert.output)).await?
    };
    let written = {
        let (output, bundle) = (cert.output.clone(), bundle.clone());
        off_the_runtime(move || store::write_outputs(&bundle, &output)).await
    };
    if let Err(e) = written {
        // Certificate and key must never disagree across the outputs: go back to the pair
        // that was in service.
        if let Some(previous) = &installed.previous
            && let Err(back) = switch_back(store, cert, previous)
        {
            tracing::error!(name = %cert.name, error = %back, "cannot switch back to the previous version");
        }
        return Err(e.into());
    }
    let reloaded = reload::run(cert, &installed.dir).await;
    if cert.verify.is_empty() {
        return reloaded.map(|()| installed).map_err(DeployError::Reload);
    }
    let served = verify::wait_until_served(&cert.verify, bundle.chain(), cert.verify_timeout).await;
    let reason = match (served, reloaded) {
        (Ok(()), Ok(())) => return Ok(installed),
        (Ok(()), Err(e)) => {
            tracing::warn!(name = %cert.name, error = %e, "the reload reported a failure, but every endpoint serves the new certificate");
            return Ok(installed);
        }
        (Err(not_served), Ok(())) => not_served.to_string(),
        (Err(not_served), Err(reload)) => format!("{reload}; {not_served}"),
    };
    let Some(previous) = installed.previous.clone() else {
        return Err(DeployError::NotServed(reason));
    };
    tracing::warn!(name = %cert.name, %reason, previous, "rolling back");
    match rollback(store, cert, &previous, cert.verify_timeout).await {
        Ok(()) => Err(DeployError::RolledBack {
            reason,
            previous,
            kept: installed.version,
        }),
        Err(rollback) => Err(DeployError::RollbackFailed {
            reason,
            previous,
            rollback: Box::new(rollback),
        }),
    }
}

/// How long the file work of one deployment may take before it is given up.
const FILE_WORK_LIMIT: Duration = Duration::from_secs(120);

/// Runs `work` (file system calls) on a blocking thread, bounded: a hung file system stalls
/// this deployment for [`FILE_WORK_LIMIT`], never the listener, the control socket or the
/// other certificates.
async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let stuck = |reason: String| StoreError::Write {
        path: std::path::PathBuf::from("(the output files)"),
        source: std::io::Error::new(std::io::ErrorKind::TimedOut, reason),
    };
    match tokio::time::timeout(FILE_WORK_LIMIT, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(stuck(format!("the file work ended abnormally: {e}"))),
        Err(_) => Err(stuck(format!(
            "the file system did not answer within {} s",
            FILE_WORK_LIMIT.as_secs()
        ))),
    }
}

/// Points `current` and the single output files at `previous` again.
/// Returns the version's directory.
fn switch_back(
    store: &Store,
    cert: &CertificateConfig,
    previous: &str,
) -> Result<std::path::PathBuf, StoreError> {
    let bundle = store.load(&cert.name, previous)?;
    let dir = store.switch_to(&cert.name, previous)?;
    store::write_outputs(&bundle, &cert.output)?;
    Ok(dir)
}

/// Puts `previous` back in service: switch, copy, reload, and check it is served again. A
/// reload that fails is no failed rollback when the server serves the previous certificate
/// all the same (it never took the new one).
async fn rollback(
    store: &Store,
    cert: &CertificateConfig,
    previous: &str,
    timeout: Duration,
) -> Result<(), RollbackError> {
    let dir = switch_back(store, cert, previous)?;
    let bundle = store.load(&cert.name, previous)?;
    let reloaded = reload::run(cert, &dir).await;
    let served = verify::wait_until_served(&cert.verify, bundle.chain(), timeout).await;
    match (served, reloaded) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(e)) => {
            tracing::warn!(name = %cert.name, error = %e, "the rollback's reload failed, but every endpoint serves the previous certificate");
            Ok(())
        }
        (Err(not_served), Ok(())) => Err(RollbackError::NotServed(not_served)),
        (Err(not_served), Err(reload)) => Err(RollbackError::Neither { reload, not_served }),
    }
}
