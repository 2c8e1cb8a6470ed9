//! One renewal of one certificate, top to bottom, as a task of its own (several run at once):
//!
//! 1. obtain (`order`): pre-flight, challenge choice, order, checks — only talks to the CA, and
//!    is abandoned when the daemon stops or loses the cluster's lease;
//! 2. publish to the cluster, so that the renewal outlives this node;
//! 3. deploy ([`crate::deploy::deploy`]): the atomic swap, reload and live check, always let
//!    finish, so that no file is ever half-written;
//! 4. revoke the replaced certificate, when asked;
//!
//! and one [`Outcome`] that the state file (`record`), the control reply, the metrics and the
//! notification all read. A dry run obtains from the staging CA and stops there. When each
//! certificate is due: `schedule` (pure), `plan` (joined with the disk), `state`, `ratelimit`.

mod order;
pub(crate) mod plan;
pub(crate) mod ratelimit;
mod record;
pub mod schedule;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::acme::keys::KeyError;
use crate::acme::{Accounts, AcmeClient, AcmeError, RevokeReason, Solvers};
use crate::challenge::choice::Choice;
use crate::challenge::dns01::Dns01;
use crate::challenge::http01::Tokens;
use crate::challenge::tls_alpn01::TlsAlpn01;
use crate::cluster::Cluster;
use crate::config::{AcmeConfig, CertificateConfig};
use crate::deploy::bundle::BundleError;
use crate::deploy::store::{Store, StoreError};
use crate::deploy::{DeployError, deploy};
use crate::preflight::{Preflight, Verdict};
use order::Attempt;
pub use order::Obtained;
pub use record::{ari_due, record, refresh_ari};
use state::{CertState, Revoked};

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Acme(#[from] AcmeError),
    /// An HTTP-01 validation failed where the pre-flight had found why it would.
    #[error("{acme}. Before the order, certkeeper's pre-flight check found: {found}")]
    Unreachable { acme: AcmeError, found: String },
    #[error("refused to deploy the new certificate, {}: {reason}", kept(.previous))]
    Refused { reason: BundleError, previous: bool },
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("nothing was ordered: {0}")]
    Store(#[from] StoreError),
    /// DNS-PERSIST-01 was to be used and the pre-flight found its record would not do.
    #[error("nothing was ordered: {0}")]
    PersistRecord(String),
}

fn kept(previous: &bool) -> &'static str {
    match previous {
        true => "the previous one stays in place",
        false => "and there is no previous one to keep serving",
    }
}

impl RenewError {
    /// When the CA said it may be asked again (a rate limit's `Retry-After`), if it did.
    pub fn retry_not_before(&self) -> Option<SystemTime> {
        match self {
            RenewError::Acme(acme) | RenewError::Unreachable { acme, .. } => {
                crate::acme::retry_after(acme)
            }
            _ => None,
        }
    }
}

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
    pub key_pem: Option<crate::acme::KeyPem>,
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
    /// What the operator should fix before it fails (a DNS-PERSIST-01 record about to lapse).
    pub warnings: Vec<String>,
    /// The CA issued a certificate (whether or not it could then be deployed).
    pub issued: bool,
    /// The serial of the certificate the CA refused to take as replaced (not named again).
    pub replaces_refused: Option<String>,
    /// The CA's renewal window (ARI) for the certificate installed, when it could be asked.
    pub ari: Option<state::AriState>,
    /// Cluster mode: the certificate could not be published to etcd (the next sync tries again).
    pub unpublished: bool,
    /// Against the staging CA, nothing deployed or recorded.
    pub dry_run: bool,
    /// The new certificate, deployed unless this is a dry run.
    pub result: Result<Issued, RenewError>,
    /// `certkeeper revoke`: how revoking the certificate it replaced went.
    pub revoked: Option<RevocationResult>,
}

/// How revoking the replaced certificate went (`certkeeper revoke`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RevocationResult {
    Revoked {
        serial: String,
        reason: String,
    },
    Failed {
        /// The certificate's serial, when it could be read.
        serial: Option<String>,
        error: String,
    },
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
    let (attempt, acme) = tokio::select! {
        attempt = attempt(&context, &cert, &ca) => attempt,
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
            warnings: attempt.warnings,
            result: attempt.result.map(|obtained| Issued {
                not_after: obtained.leaf.not_after,
                names: obtained.leaf.names,
                version: None,
            }),
            replaces_refused: attempt.replaces_refused,
            ari: None,
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
    let mut ari = None;
    let result = match attempt.result {
        Ok(obtained) => {
            let deployed = deploy(&context.store, &cert, &obtained.bundle).await;
            // Asked now, the CA's window is recorded with the outcome (one state write).
            if let (Ok(_), Some(acme), Some(der)) =
                (&deployed, &acme, obtained.bundle.chain().first())
            {
                let now = SystemTime::now();
                match record::fetch_ari(acme, der, &obtained.leaf.serial, None, now).await {
                    Ok(window) => ari = Some(window),
                    Err(e) => {
                        tracing::debug!(name = %cert.name, error = %e, "the renewal window (ARI) is asked for later")
                    }
                }
            }
            deployed
                .map(|installed| Issued {
                    not_after: obtained.leaf.not_after,
                    names: obtained.leaf.names,
                    version: Some(installed.dir),
                })
                .map_err(RenewError::from)
        }
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
        warnings: attempt.warnings,
        replaces_refused: attempt.replaces_refused,
        ari,
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

/// Step 1 with the account at `ca` and the solvers `context` holds; and that account. The
/// pre-flight looks while the account connects: neither waits for the other.
async fn attempt(
    context: &Context,
    cert: &CertificateConfig,
    ca: &AcmeConfig,
) -> (Attempt, Option<AcmeClient>) {
    let solvers = Solvers {
        tokens: &context.tokens,
        tls_alpn01: &context.tls_alpn01,
        dns01: context.dns01.as_deref(),
        webroot: None,
    };
    let preflight = context.preflight.as_deref();
    let (acme, looked) = tokio::join!(
        context.accounts.get(ca, &context.store),
        order::look(solvers, preflight, &context.store, cert),
    );
    let acme = match acme {
        Ok(acme) => acme,
        Err(e) => {
            let attempt = Attempt {
                ca: Some(ca.directory.clone()),
                choice: None,
                preflight: None,
                warnings: Vec::new(),
                replaces_refused: None,
                result: Err(e.into()),
            };
            return (attempt, None);
        }
    };
    let attempt = order::obtain(&acme, solvers, preflight, &context.store, cert, looked).await;
    (attempt, Some(acme))
}
