//! What a renewal leaves in the certificate's state file: its outcome, and the CA's renewal
//! window (ARI) for the certificate it installed.

use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;

use super::state::{AriState, CertState};
use super::{Outcome, RenewError};
use crate::acme::AcmeClient;
use crate::config::CertificateConfig;
use crate::deploy::DeployError;
use crate::deploy::store::{Store, StoreError};

/// Records the outcome of an attempt in the certificate's state file.
///
/// A failed reload is not a failed issuance: the new certificate is in place, and ordering it
/// again would only burn the CA's duplicate-certificate limit. It is recorded as a warning.
pub fn record(store: &Store, outcome: &Outcome) -> Result<(), StoreError> {
    let name = outcome.cert.name.as_str();
    let mut state = CertState::load(store, name);
    let now = SystemTime::now();
    state.ca = Some(outcome.ca.clone());
    if let Some(verdicts) = &outcome.preflight {
        state.preflight = verdicts.clone();
    }
    // The window of the certificate just installed came with the outcome: one write.
    if let Some(ari) = &outcome.ari {
        state.ari = Some(ari.clone());
    }
    if let (Some(ari), Some(serial)) = (&mut state.ari, &outcome.replaces_refused)
        && ari.serial == *serial
    {
        ari.replaces_refused = true;
    }
    if let Some(choice) = &outcome.choice {
        state.challenge = Some(choice.summary().to_string());
        state.challenge_reason = Some(choice.reason.clone());
    }
    match &outcome.result {
        Ok(_) => state.record_success(now),
        Err(RenewError::Deploy(DeployError::Reload(reload))) => {
            state.record_success_with_warning(now, reload.to_string())
        }
        Err(e) => {
            state.record_failure(now, e.to_string());
            state.retry_not_before = e.retry_not_before();
        }
    }
    state.save(store, name).inspect_err(|e| {
        tracing::error!(name, error = %e, "could not save the certificate's state");
    })
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
    let mut state = CertState::load(store, &cert.name);
    let previous = state.ari.take().filter(|ari| ari.serial == leaf.serial);
    let fetched = fetch_ari(acme, &der, &leaf.serial, previous.as_ref(), now).await?;
    if let (Some(start), Some(was)) = (fetched.start, previous.as_ref().and_then(|p| p.start))
        && start < was
    {
        tracing::warn!(
            name = %cert.name,
            explanation = fetched.explanation.as_deref().unwrap_or("none given"),
            "the CA moved the renewal window earlier (a revocation is coming?): renewing earlier"
        );
    }
    state.ari = Some(fetched);
    state.save(store, &cert.name).map_err(RenewError::Store)
}

/// The renewal window (ARI) the CA gives for the certificate `der` (serial `serial`), as the
/// state file keeps it; `previous`: what was known of the same certificate.
pub(super) async fn fetch_ari(
    acme: &AcmeClient,
    der: &CertificateDer<'_>,
    serial: &str,
    previous: Option<&AriState>,
    now: SystemTime,
) -> Result<AriState, RenewError> {
    let window = acme.renewal_window(der).await?;
    let next_poll =
        |after: Duration| now + after.clamp(Duration::from_secs(60), Duration::from_secs(86400));
    let (start, end, after, explanation) = match window {
        Some(w) => (Some(w.start), Some(w.end), w.retry_after, w.explanation),
        // A CA without ARI is asked again a day later.
        None => (None, None, Duration::from_secs(86400), None),
    };
    Ok(AriState {
        serial: serial.to_string(),
        start,
        end,
        next_poll: Some(next_poll(after)),
        explanation,
        replaces_refused: previous.is_some_and(|p| p.replaces_refused),
    })
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
