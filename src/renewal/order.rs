//! The part of a renewal that talks to the CA: the pre-flight, the challenge choice, the order,
//! and the checks of what comes back. It changes no file, so it may be abandoned at any await
//! (on SIGTERM, or when the cluster's lease is lost).

use std::time::SystemTime;

use super::RenewError;
use crate::acme::keys::{self, KeyError};
use crate::acme::{AcmeClient, AcmeError, Solvers, ari};
use crate::challenge::choice::{Blockers, Choice, Method, choose};
use crate::config::CertificateConfig;
use crate::config::Challenge;
use crate::deploy::bundle::{Bundle, LeafInfo};
use crate::deploy::store::Store;
use crate::preflight::{BeforeOrder, Preflight, Severity, Verdict};
use instant_acme::CertificateIdentifier;

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
    /// What the operator should fix before it fails (a DNS-PERSIST-01 record about to lapse).
    pub warnings: Vec<String>,
    /// The serial of the certificate the CA refused to take as replaced by this order.
    pub replaces_refused: Option<String>,
    pub result: Result<Obtained, RenewError>,
}

/// What is known before the account is needed: whether the certificate could be deployed,
/// and what the pre-flight found. Looked at while the account connects to the CA.
pub struct Looked {
    writable: Result<(), RenewError>,
    found: Option<BeforeOrder>,
}

/// Checks that `cert` could be deployed and, when the order may use HTTP-01, runs the
/// pre-flight for its names; orders nothing, so it goes on while the account connects.
pub async fn look(
    solvers: Solvers<'_>,
    preflight: Option<&Preflight>,
    store: &Store,
    cert: &CertificateConfig,
) -> Looked {
    let writable = store
        .check_writable(&cert.name)
        .and_then(|()| crate::deploy::store::check_outputs_writable(&cert.output))
        .map_err(RenewError::from);
    let steps = cert.challenge.steps(solvers.dns01.is_some());
    let names = http01_names(cert);
    let found = match preflight.filter(|_| writable.is_ok()) {
        Some(preflight) if steps.contains(&Method::Http01) && !names.is_empty() => {
            preflight
                .before_order(&names, solvers.tokens, cert.webroot.as_deref())
                .await
        }
        _ => None,
    };
    Looked { writable, found }
}

/// The names of `cert` that HTTP-01 could prove (not the wildcards).
fn http01_names(cert: &CertificateConfig) -> Vec<&str> {
    (cert.domains.iter())
        .filter(|d| !d.is_wildcard())
        .map(|d| d.as_str())
        .collect()
}

/// Orders a certificate for `cert` and checks it against every pre-deployment rule, after
/// [`look`] found it deployable.
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
    looked: Looked,
) -> Attempt {
    let Looked { writable, found } = looked;
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
            warnings: Vec::new(),
            replaces_refused: None,
            result: Err(e),
        };
    }
    let steps = cert.challenge.steps(solvers.dns01.is_some());
    let can_fall_back = cert.challenge == Challenge::Auto && solvers.dns01.is_some();
    let http01_names = http01_names(cert);
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
    // The operator's DNS-PERSIST-01 records are judged before anything is ordered, when the
    // ladder would come to them: first, or every step before ruled out (`auto` ends with it).
    let ruled_out = |method: &Method| match method {
        Method::Http01 => blocker.is_some(),
        Method::TlsAlpn01 => tls_alpn_blocker.is_some(),
        Method::Dns01 | Method::DnsPersist01 => false,
    };
    let climbs_to_persist = (steps.iter())
        .position(|m| *m == Method::DnsPersist01)
        .is_some_and(|at| steps[..at].iter().all(ruled_out));
    let (persist_blocker, warnings) = match preflight.filter(|_| climbs_to_persist) {
        Some(preflight) => persist_blocker(acme, preflight, store, cert).await,
        None => (None, Vec::new()),
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
            warnings,
            replaces_refused: None,
            result: Err(RenewError::PersistRecord(found)),
        };
    }
    let mut replaces = replaceable(store, cert, SystemTime::now());
    let mut result = order(acme, solvers, store, cert, &choice, &mut replaces).await;
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
        result = order(acme, solvers, store, cert, &choice, &mut replaces).await;
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
        result = order(acme, solvers, store, cert, &choice, &mut replaces).await;
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
        warnings,
        replaces_refused: replaces.refused,
        result,
    }
}

/// The certificate a new order names in `replaces` (RFC 9773), and whether the CA refused it.
struct Replaces {
    current: Option<(String, CertificateIdentifier<'static>)>,
    /// The serial of the one the CA refused: not named again.
    refused: Option<String>,
}

/// The current leaf, when an order may name it as replaced: the CA gave a renewal window for
/// this very certificate and we are inside it (naming it after the window got certmagic's
/// `alreadyReplaced` loop; before it, a forced renewal is a new certificate, not the
/// replacement the CA planned), the leaf has the names the config asks for, and the CA has not
/// refused it before.
fn replaceable(store: &Store, cert: &CertificateConfig, now: SystemTime) -> Replaces {
    let none = Replaces {
        current: None,
        refused: None,
    };
    let (Some(current), Some(der)) = (
        store.current(&cert.name).ok().flatten(),
        store.current_leaf_der(&cert.name),
    ) else {
        return none;
    };
    let state = super::state::CertState::load(store, &cert.name);
    let Some(ari) = state.ari.filter(|ari| ari.serial == current.leaf.serial) else {
        return none;
    };
    let wanted = |names: &mut dyn Iterator<Item = String>| {
        let mut names: Vec<String> = names.map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        names
    };
    let same_names = wanted(&mut current.leaf.names.iter().cloned())
        == wanted(&mut cert.domains.iter().map(|d| d.as_str().to_string()));
    let in_time = ari.start.is_some_and(|start| start <= now)
        && ari.end.is_some_and(|end| now <= end)
        && now < current.leaf.not_after;
    if ari.replaces_refused || !same_names || !in_time {
        return none;
    }
    Replaces {
        current: ari::certificate_id(&der)
            .ok()
            .map(|id| (current.leaf.serial, id)),
        refused: None,
    }
}

/// The step of the ladder after `method`, if there is one.
fn step_after(steps: &[Method], method: Method) -> Option<Method> {
    let at = steps.iter().position(|m| *m == method)?;
    steps.get(at + 1).copied()
}

/// The first reason the DNS-PERSIST-01 records of `cert` would not prove control to this CA,
/// if one would not; and the records about to lapse (logged too).
async fn persist_blocker(
    acme: &AcmeClient,
    preflight: &Preflight,
    store: &Store,
    cert: &CertificateConfig,
) -> (Option<String>, Vec<String>) {
    let identity = match acme.persist_identity().await {
        Ok(identity) => identity,
        Err(e) => return (Some(e.to_string()), Vec::new()),
    };
    let renew_by = (store.current(&cert.name).ok().flatten()).map(|c| c.leaf.not_after);
    let findings =
        (preflight.persist_findings(&identity, &cert.domains, renew_by, SystemTime::now())).await;
    let warnings: Vec<String> = (findings.iter())
        .filter(|f| f.severity == Severity::Warn)
        .map(|f| f.message.clone())
        .collect();
    for warning in &warnings {
        tracing::warn!(name = %cert.name, finding = %warning, "dns-persist-01 record");
    }
    let blocker = (findings.into_iter())
        .find(|f| f.severity == Severity::Fail)
        .map(|f| f.message);
    (blocker, warnings)
}

async fn order(
    acme: &AcmeClient,
    solvers: Solvers<'_>,
    store: &Store,
    cert: &CertificateConfig,
    choice: &Choice,
    replaces: &mut Replaces,
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
    // the CA's rate limits; the order itself matters more, so a refusal is ordered again
    // without, and remembered (not the CA's own failure: pebble 2.10 now and then fails to look
    // the replaced certificate up, and names it again next time).
    let chain = loop {
        let named = replaces.current.as_ref().map(|(_, id)| id);
        let issued = (acme.issue(
            &cert.domains,
            &csr,
            choice,
            solvers,
            named,
            cert.profile.as_deref(),
        ))
        .await;
        match issued {
            Err(e) if named.is_some() && e.is_server_fault() => {
                tracing::info!(name = %cert.name, error = %e, "the CA failed on the order naming the certificate it replaces; ordering again without");
                replaces.current = None;
            }
            Err(e) if named.is_some() && e.refuses_replaces() => {
                tracing::info!(name = %cert.name, error = %e, "the CA refused the order naming the certificate it replaces; ordering again without (and not naming it again)");
                replaces.refused = replaces.current.take().map(|(serial, _)| serial);
            }
            issued => break issued?,
        }
    };
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
