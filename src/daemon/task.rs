//! One renewal as a task of its own, so that several run at once: obtain (abandoned when the
//! daemon stops), then deploy (always let finish, so that no file is ever half-written). A dry
//! run obtains from the staging CA and stops there.

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use std::time::{Instant, SystemTime};

use tokio::sync::watch;
pub use tokio::task::Id;

use crate::acme::{Accounts, RevokeReason, Solvers};
use crate::challenge::choice::Choice;
use crate::challenge::dns01::Dns01;
use crate::challenge::http01::Tokens;
use crate::challenge::tls_alpn01::TlsAlpn01;
use crate::cluster::Cluster;
use crate::config::{AcmeConfig, CertificateConfig};
use crate::daemon::control::RevocationResult;
use crate::deploy::deploy;
use crate::deploy::store::Store;
use crate::preflight::{Preflight, Verdict};
use crate::renewal::state::{CertState, Revoked};
use crate::renewal::{self, Attempt, RenewError};

/// What every renewal shares: cheap to clone into each task.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub tokens: Tokens,
    pub tls_alpn01: TlsAlpn01,
    pub accounts: Accounts,
    pub dns01: Option<Arc<Dns01>>,
    pub preflight: Option<Arc<Preflight>>,
    pub cluster: Option<Cluster>,
}

/// How a renewal task ended.
pub enum Finished {
    /// The daemon is stopping and the order was left unfinished; no file was changed.
    Abandoned {
        name: String,
        dry_run: bool,
    },
    Done(Box<Outcome>),
}

/// `certkeeper revoke`: why, and the certificate's own key to sign with (else the account's).
pub struct Revocation {
    pub reason: RevokeReason,
    /// The certificate's own key, when the revocation is to be signed with it.
    pub key_pem: Option<crate::daemon::control::KeyPem>,
}

/// A certificate the CA issued and that passed every check.
pub struct Issued {
    pub not_after: SystemTime,
    pub names: Vec<String>,
    /// Where it was installed; `None` for a dry run.
    pub version: Option<PathBuf>,
}

pub struct Outcome {
    pub cert: CertificateConfig,
    /// The CA's directory URL.
    pub ca: String,
    pub started: Instant,
    pub choice: Option<Choice>,
    /// What the pre-flight before the order found, when it ran.
    pub preflight: Option<Vec<Verdict>>,
    /// The CA issued a certificate (whether or not it could then be deployed).
    pub issued: bool,
    /// Cluster mode: the certificate could not be published to etcd (the next sync tries again).
    pub unpublished: bool,
    /// Against the staging CA, nothing deployed or recorded.
    pub dry_run: bool,
    /// The new certificate, deployed unless this is a dry run.
    pub result: Result<Issued, RenewError>,
    /// `certkeeper revoke`: how revoking the certificate it replaced went.
    pub revoked: Option<RevocationResult>,
}

/// Renews `cert` at the CA `ca`; gives up the order (not a deployment) once `stop` turns true.
/// A dry run deploys nothing. With `revoke`, the certificate being replaced is revoked once
/// its successor is in place (or when none could be had: a revocation is never skipped).
pub async fn renew(
    context: Context,
    mut cert: CertificateConfig,
    ca: AcmeConfig,
    dry_run: bool,
    revoke: Option<Revocation>,
    mut stop: watch::Receiver<bool>,
) -> Finished {
    let started = Instant::now();
    let replaced = context.store.current_leaf_der(&cert.name);
    if revoke
        .as_ref()
        .is_some_and(|r| r.reason == RevokeReason::KeyCompromise)
    {
        // A compromised key is never reused.
        cert.reuse_key = false;
    }
    let attempt = tokio::select! {
        attempt = obtain(&context, &cert, &ca) => attempt,
        _ = stop.wait_for(|stopping| *stopping) => {
            tracing::info!(name = %cert.name, "the order in flight is abandoned (stopping, or the renewal lease is lost); no file was changed");
            return Finished::Abandoned { name: cert.name, dry_run };
        }
    };
    let issued = attempt.result.is_ok();
    if dry_run {
        return Finished::Done(Box::new(Outcome {
            ca: attempt.ca.unwrap_or(ca.directory),
            choice: attempt.choice,
            preflight: attempt.preflight,
            result: attempt.result.map(|obtained| Issued {
                not_after: obtained.leaf.not_after,
                names: obtained.leaf.names,
                version: None,
            }),
            cert,
            started,
            issued,
            unpublished: false,
            dry_run,
            revoked: None,
        }));
    }
    // The other nodes get the certificate before this one deploys it: should this node die
    // now, the renewal is not lost.
    let mut unpublished = false;
    if let (Some(cluster), Ok(obtained)) = (&context.cluster, &attempt.result)
        && let Err(e) = cluster
            .publish(&cert.name, &obtained.bundle, &obtained.leaf)
            .await
    {
        tracing::warn!(name = %cert.name, error = %e, "cannot publish the new certificate to the cluster; the next sync tries again");
        unpublished = true;
    }
    let result = match attempt.result {
        Ok(obtained) => deploy(&context.store, &cert, &obtained.bundle)
            .await
            .map(|installed| Issued {
                not_after: obtained.leaf.not_after,
                names: obtained.leaf.names,
                version: Some(installed.dir),
            })
            .map_err(RenewError::from),
        Err(e) => Err(e),
    };
    let revoked = match (revoke, replaced) {
        (Some(revocation), Some(der)) => {
            Some(revoke_replaced(&context, &cert, &ca, &der, &revocation).await)
        }
        _ => None,
    };
    Finished::Done(Box::new(Outcome {
        ca: attempt.ca.unwrap_or(ca.directory),
        choice: attempt.choice,
        preflight: attempt.preflight,
        cert,
        started,
        issued,
        unpublished,
        dry_run,
        result,
        revoked,
    }))
}

/// Revokes `der`, the certificate `cert` had, and marks it so in the state.
async fn revoke_replaced(
    context: &Context,
    cert: &CertificateConfig,
    ca: &AcmeConfig,
    der: &CertificateDer<'_>,
    revocation: &Revocation,
) -> RevocationResult {
    let reason = revocation.reason;
    let serial = match crate::deploy::bundle::read_leaf_der(der) {
        Ok(leaf) => leaf.serial,
        Err(e) => {
            return RevocationResult::Failed {
                serial: None,
                error: e.to_string(),
            };
        }
    };
    let revoked = match &revocation.key_pem {
        Some(pem) => {
            crate::acme::revoke_with_certificate_key(ca, &ca.directory, der, &pem.0, reason).await
        }
        None => match context.accounts.get(ca, &context.store).await {
            Ok(acme) => acme.revoke(der, reason).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = revoked {
        return RevocationResult::Failed {
            serial: Some(serial),
            error: e.to_string(),
        };
    }
    tracing::warn!(name = %cert.name, serial = %serial, reason = reason.as_str(), "certificate revoked");
    let mut state = CertState::load(&context.store, &cert.name);
    state.revoked = Some(Revoked {
        serial: serial.clone(),
        reason: reason.as_str().to_string(),
        at: Some(SystemTime::now()),
    });
    if let Err(e) = state.save(&context.store, &cert.name) {
        tracing::error!(name = %cert.name, error = %e, "cannot record the revocation in the state");
    }
    RevocationResult::Revoked {
        serial,
        reason: reason.as_str().to_string(),
    }
}

async fn obtain(context: &Context, cert: &CertificateConfig, ca: &AcmeConfig) -> Attempt {
    let acme = match context.accounts.get(ca, &context.store).await {
        Ok(acme) => acme,
        Err(e) => {
            return Attempt {
                ca: Some(ca.directory.clone()),
                choice: None,
                preflight: None,
                result: Err(e.into()),
            };
        }
    };
    let solvers = Solvers {
        tokens: &context.tokens,
        tls_alpn01: &context.tls_alpn01,
        dns01: context.dns01.as_deref(),
        webroot: None,
    };
    renewal::obtain(
        &acme,
        solvers,
        context.preflight.as_deref(),
        &context.store,
        cert,
    )
    .await
}
