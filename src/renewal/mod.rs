//! One renewal of one certificate: key, CSR, order, checks, then the atomic swap and reload.
//!
//! Split in two on purpose: [`obtain`] only talks to the CA and may be abandoned at any await
//! (on SIGTERM); [`crate::deploy::deploy`] changes files and runs the reload, and is always let
//! finish.

pub mod plan;
pub mod ratelimit;
pub mod schedule;
pub mod state;

use std::time::{Duration, SystemTime};

use crate::acme::keys::{self, KeyError};
use crate::acme::{AcmeClient, AcmeError, Solvers, ari};
use crate::challenge::choice::{Blockers, Choice, Method, choose};
use crate::config::CertificateConfig;
use crate::config::Challenge;
use crate::deploy::DeployError;
use crate::deploy::bundle::{Bundle, BundleError, LeafInfo};
use crate::deploy::store::{Store, StoreError};
use crate::preflight::{BeforeOrder, Preflight, Severity, Verdict};
use crate::renewal::state::{AriState, CertState};

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

/// A certificate obtained and checked, not yet deployed.
pub struct Obtained {
    pub bundle: Bundle,
    pub leaf: LeafInfo,
}

/// One attempt: the challenge chosen (and why) and what came of it.
pub struct Attempt {
    /// The CA's directory URL.
    pub ca: Option<String>,
    pub choice: Option<Choice>,
    /// What the pre-flight before the order found, when it ran.
    pub preflight: Option<Vec<Verdict>>,
    pub result: Result<Obtained, RenewError>,
}

/// Orders a certificate for `cert` and checks it against every pre-deployment rule.
///
/// Every order that may use HTTP-01 is preceded by the pre-flight check. With
/// `challenge = "auto"` and DNS-01 configured, it decides between the two, and an HTTP-01
/// validation that fails is retried with DNS-01 at once; with HTTP-01 only the order goes out
/// all the same (a local check can be wrong), and a failed validation carries its finding.
pub async fn obtain(
    acme: &AcmeClient,
    solvers: Solvers<'_>,
    preflight: Option<&Preflight>,
    store: &Store,
    cert: &CertificateConfig,
) -> Attempt {
    let writable = store
        .check_writable(&cert.name)
        .and_then(|()| crate::deploy::store::check_outputs_writable(&cert.output))
        .map_err(RenewError::from);
    // Nothing is ordered that could not be deployed: not into unwritable directories, not
    // on a clock that would call the new certificate "not valid yet".
    let ready = match writable {
        Ok(()) => acme.check_clock().await.map_err(RenewError::from),
        Err(e) => Err(e),
    };
    if let Err(e) = ready {
        return Attempt {
            ca: None,
            choice: None,
            preflight: None,
            result: Err(e),
        };
    }
    let steps = cert.challenge.steps(solvers.dns01.is_some());
    let can_fall_back = cert.challenge == Challenge::Auto && solvers.dns01.is_some();
    let http01_names: Vec<&str> = cert
        .domains
        .iter()
        .filter(|d| !d.is_wildcard())
        .map(|d| d.as_str())
        .collect();
    // The operator's DNS-PERSIST-01 records are judged before anything is ordered.
    let persist_blocker = match preflight.filter(|_| steps.contains(&Method::DnsPersist01)) {
        Some(preflight) => persist_blocker(acme, preflight, store, cert).await,
        None => None,
    };
    let may_use_http01 = steps.contains(&Method::Http01) && !http01_names.is_empty();
    let found = match preflight.filter(|_| may_use_http01) {
        Some(preflight) => {
            preflight
                .before_order(&http01_names, solvers.tokens, cert.webroot.as_deref())
                .await
        }
        None => None,
    };
    let BeforeOrder { verdicts, blocker } = found.clone().unwrap_or_default();
    if let Some(blocker) = &blocker {
        tracing::warn!(name = %cert.name, finding = %blocker, "the pre-flight check expects http-01 to fail");
    }
    // Port 443 is probed only when the ladder would climb to TLS-ALPN-01.
    let climbs_to_tls_alpn = steps.len() > 1
        && steps.contains(&Method::TlsAlpn01)
        && (steps[0] == Method::TlsAlpn01 || blocker.is_some());
    let tls_alpn_blocker = match preflight {
        Some(preflight)
            if climbs_to_tls_alpn && preflight.runs_before_orders() && !http01_names.is_empty() =>
        {
            preflight
                .tls_alpn_blocker(&http01_names, solvers.tls_alpn01)
                .await
        }
        _ => None,
    };
    let mut choice = choose(
        cert.challenge,
        &cert.domains,
        solvers.dns01.is_some(),
        Blockers {
            http01: blocker.as_deref(),
            tls_alpn01: tls_alpn_blocker.as_deref(),
            dns_persist01: persist_blocker.as_deref(),
        },
    );
    tracing::info!(name = %cert.name, challenge = choice.summary(), reason = %choice.reason, "challenge chosen");
    // A record that would not do fails at the CA for sure, and counts as a failed validation
    // there: it is not tried.
    let uses_persist = (choice.methods.iter()).any(|(_, m)| *m == Method::DnsPersist01);
    if let Some(found) = persist_blocker.filter(|_| uses_persist) {
        return Attempt {
            ca: Some(acme.directory().to_string()),
            choice: Some(choice),
            preflight: None,
            result: Err(RenewError::PersistRecord(found)),
        };
    }
    let mut result = order(acme, solvers, store, cert, &choice).await;
    // A CA that offers no dns-persist-01 (Let's Encrypt's production, in 2026): the next step.
    if let Err(RenewError::Acme(AcmeError::NoChallenge { method, .. })) = &result
        && *method == Method::DnsPersist01.as_str()
        && let Some(next) = step_after(&steps, Method::DnsPersist01)
    {
        choice = Choice::all(
            &cert.domains,
            next,
            format!(
                "the CA offers no dns-persist-01 challenge; {} is the next step",
                next.as_str()
            ),
        );
        tracing::warn!(name = %cert.name, reason = %choice.reason, "falling back");
        result = order(acme, solvers, store, cert, &choice).await;
    }
    if let Err(RenewError::Acme(
        e @ AcmeError::Validation {
            method: method @ (Method::Http01 | Method::TlsAlpn01),
            ..
        },
    )) = &result
        && can_fall_back
    {
        choice = Choice::all(
            &cert.domains,
            Method::Dns01,
            format!("{} failed ({e}); retried with dns-01", method.as_str()),
        );
        tracing::warn!(name = %cert.name, reason = %choice.reason, "falling back to dns-01");
        result = order(acme, solvers, store, cert, &choice).await;
    }
    // The CA's words alone rarely say what to do; the pre-flight's sentence does.
    let result = match (result, blocker) {
        (
            Err(RenewError::Acme(
                acme @ AcmeError::Validation {
                    method: Method::Http01,
                    ..
                },
            )),
            Some(found),
        ) => Err(RenewError::Unreachable { acme, found }),
        (result, _) => result,
    };
    Attempt {
        ca: Some(acme.directory().to_string()),
        choice: Some(choice),
        preflight: found.map(|_| verdicts),
        result,
    }
}

/// The step of the ladder after `method`, if there is one.
fn step_after(steps: &[Method], method: Method) -> Option<Method> {
    let at = steps.iter().position(|m| *m == method)?;
    steps.get(at + 1).copied()
}

/// The first reason the DNS-PERSIST-01 records of `cert` would not prove control to this CA,
/// if one would not. A record about to lapse is logged.
async fn persist_blocker(
    acme: &AcmeClient,
    preflight: &Preflight,
    store: &Store,
    cert: &CertificateConfig,
) -> Option<String> {
    let identity = match acme.persist_identity().await {
        Ok(identity) => identity,
        Err(e) => return Some(e.to_string()),
    };
    let renew_by = (store.current(&cert.name).ok().flatten()).map(|c| c.leaf.not_after);
    let findings =
        (preflight.persist_findings(&identity, &cert.domains, renew_by, SystemTime::now())).await;
    for finding in findings.iter().filter(|f| f.severity == Severity::Warn) {
        tracing::warn!(name = %cert.name, finding = %finding.message, "dns-persist-01 record");
    }
    (findings.into_iter())
        .find(|f| f.severity == Severity::Fail)
        .map(|f| f.message)
}

async fn order(
    acme: &AcmeClient,
    solvers: Solvers<'_>,
    store: &Store,
    cert: &CertificateConfig,
    choice: &Choice,
) -> Result<Obtained, RenewError> {
    let key = match cert.reuse_key {
        true => match store.current_key_pem(&cert.name) {
            Ok(pem) => keys::from_pem(&pem)?,
            Err(_) => generate(cert).await?,
        },
        false => generate(cert).await?,
    };
    let csr = keys::csr(&key, &cert.domains)?;
    let solvers = Solvers {
        webroot: cert.webroot.as_deref(),
        ..solvers
    };
    // Naming the certificate this one replaces exempts a renewal inside the ARI window from
    // the CA's rate limits.
    let replaces = store
        .current_leaf_der(&cert.name)
        .and_then(|der| ari::certificate_id(&der).ok());
    let chain = acme
        .issue(
            &cert.domains,
            &csr,
            choice,
            solvers,
            replaces.as_ref(),
            cert.profile.as_deref(),
        )
        .await?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let refused = |reason| RenewError::Refused {
        reason,
        previous: store.current_version(&cert.name).is_some(),
    };
    let bundle = Bundle::from_pem(&chain, &key_pem).map_err(refused)?;
    let leaf = bundle
        .check(&cert.domains, SystemTime::now())
        .map_err(refused)?;
    Ok(Obtained { bundle, leaf })
}

/// RSA key generation takes long enough to stall the runtime: run it off the async threads.
async fn generate(cert: &CertificateConfig) -> Result<rcgen::KeyPair, KeyError> {
    let key_type = cert.key_type;
    tokio::task::spawn_blocking(move || keys::generate(key_type))
        .await
        .map_err(|e| KeyError::Generate(key_type, e.to_string()))?
}

/// Records the outcome of an attempt in the certificate's state file.
///
/// A failed reload is not a failed issuance: the new certificate is in place, and ordering it
/// again would only burn the CA's duplicate-certificate limit. It is recorded as a warning.
pub fn record(
    store: &Store,
    name: &str,
    choice: Option<&Choice>,
    ca: Option<&str>,
    preflight: Option<&[Verdict]>,
    result: Result<(), &RenewError>,
) -> Result<(), StoreError> {
    let mut state = CertState::load(store, name);
    let now = SystemTime::now();
    if let Some(ca) = ca {
        state.ca = Some(ca.to_string());
    }
    if let Some(verdicts) = preflight {
        state.preflight = verdicts.to_vec();
    }
    if let Some(choice) = choice {
        state.challenge = Some(choice.summary().to_string());
        state.challenge_reason = Some(choice.reason.clone());
    }
    match result {
        Ok(()) => state.record_success(now),
        Err(RenewError::Deploy(DeployError::Reload(reload))) => {
            state.record_success_with_warning(now, reload.to_string())
        }
        Err(e) => {
            state.record_failure(now, e.to_string());
            if let RenewError::Acme(acme) | RenewError::Unreachable { acme, .. } = e {
                state.retry_not_before = crate::acme::retry_after(acme);
            }
        }
    }
    state.save(store, name).inspect_err(|e| {
        tracing::error!(name, error = %e, "could not save the certificate's state");
    })
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

/// Asks the CA for the renewal window (ARI) of the current certificate and records it, with
/// when to ask again. A CA without ARI is asked again a day later.
pub async fn refresh_ari(
    acme: &AcmeClient,
    store: &Store,
    cert: &CertificateConfig,
    now: SystemTime,
) -> Result<(), RenewError> {
    let Some(der) = store.current_leaf_der(&cert.name) else {
        return Ok(());
    };
    let leaf =
        crate::deploy::bundle::read_leaf_der(&der).map_err(|source| StoreError::Corrupt {
            path: store.current_link(&cert.name),
            source,
        })?;
    let window = acme.renewal_window(&der).await?;
    let mut state = CertState::load(store, &cert.name);
    let previous = state.ari.take().filter(|ari| ari.serial == leaf.serial);
    let next_poll =
        |after: Duration| now + after.clamp(Duration::from_secs(60), Duration::from_secs(86400));
    state.ari = Some(match window {
        Some(window) => {
            if previous
                .as_ref()
                .and_then(|p| p.start)
                .is_some_and(|start| window.start < start)
            {
                tracing::warn!(
                    name = %cert.name,
                    explanation = window.explanation.as_deref().unwrap_or("none given"),
                    "the CA moved the renewal window earlier (a revocation is coming?): renewing earlier"
                );
            }
            AriState {
                serial: leaf.serial,
                start: Some(window.start),
                end: Some(window.end),
                next_poll: Some(next_poll(window.retry_after)),
                explanation: window.explanation,
            }
        }
        None => AriState {
            serial: leaf.serial,
            start: None,
            end: None,
            next_poll: Some(next_poll(Duration::from_secs(86400))),
            explanation: None,
        },
    });
    state.save(store, &cert.name).map_err(RenewError::Store)
}

/// Whether the ARI information of `cert` is missing, stale, or for an older certificate.
pub fn ari_due(plan: &crate::renewal::plan::Plan, now: SystemTime) -> bool {
    let Some(leaf) = &plan.leaf else {
        return false;
    };
    match &plan.state.ari {
        Some(ari) => ari.serial != leaf.serial || ari.next_poll.is_none_or(|at| at <= now),
        None => true,
    }
}
