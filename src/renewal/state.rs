//! What the daemon remembers about each certificate between runs: the last attempt and its
//! result, and how many attempts have failed in a row. Kept as JSON beside the versions and
//! written atomically, so a restart continues the same schedule.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::deploy::store::{FileMode, Store, StoreError, write_atomic};
use crate::timefmt::unix_seconds;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CertState {
    #[serde(with = "unix_seconds", default)]
    pub last_attempt: Option<SystemTime>,
    #[serde(with = "unix_seconds", default)]
    pub last_success: Option<SystemTime>,
    /// The operator-facing reason of the last failure; cleared by a success.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub failures: u32,
    /// The challenge the last attempt used ("http-01", "dns-01", "mixed"), and why.
    #[serde(default)]
    pub challenge: Option<String>,
    #[serde(default)]
    pub challenge_reason: Option<String>,
    /// Not before this time: a rate-limited CA's "retry after".
    #[serde(with = "unix_seconds", default)]
    pub retry_not_before: Option<SystemTime>,
    /// The directory URL of the CA the last attempt went to.
    #[serde(default)]
    pub ca: Option<String>,
    /// The CA's renewal window (ARI) for the current certificate.
    #[serde(default)]
    pub ari: Option<AriState>,
    /// What the pre-flight check found before the last order, per name and address family.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preflight: Vec<crate::preflight::Verdict>,
    /// The last certificate revoked at the operator's request (`certkeeper revoke`).
    #[serde(default)]
    pub revoked: Option<Revoked>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Revoked {
    pub serial: String,
    pub reason: String,
    #[serde(with = "unix_seconds", default)]
    pub at: Option<SystemTime>,
}

/// What the CA said about renewing the certificate with `serial` (RFC 9773).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AriState {
    pub serial: String,
    /// The suggested window; both `None` when the CA offers no ARI.
    #[serde(with = "unix_seconds", default)]
    pub start: Option<SystemTime>,
    #[serde(with = "unix_seconds", default)]
    pub end: Option<SystemTime>,
    /// When to ask again (the CA's Retry-After).
    #[serde(with = "unix_seconds", default)]
    pub next_poll: Option<SystemTime>,
    #[serde(default)]
    pub explanation: Option<String>,
    /// The CA refused an order naming this certificate in `replaces`: not named again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaces_refused: bool,
}

impl CertState {
    pub fn load(store: &Store, name: &str) -> CertState {
        let path = state_path(store, name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable state file; starting afresh");
                CertState::default()
            }),
            Err(_) => CertState::default(),
        }
    }

    pub fn save(&self, store: &Store, name: &str) -> Result<(), StoreError> {
        let path = state_path(store, name);
        crate::deploy::store::create_dir(path.parent().unwrap_or(Path::new(".")))?;
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomic(&path, &json, FileMode::PUBLIC)
    }

    pub fn record_success(&mut self, at: SystemTime) {
        self.last_attempt = Some(at);
        self.last_success = Some(at);
        self.last_error = None;
        self.failures = 0;
        self.retry_not_before = None;
    }

    pub fn record_success_with_warning(&mut self, at: SystemTime, warning: String) {
        self.record_success(at);
        self.last_error = Some(warning);
    }

    pub fn record_failure(&mut self, at: SystemTime, reason: String) {
        self.last_attempt = Some(at);
        self.last_error = Some(reason);
        self.failures = self.failures.saturating_add(1);
    }

    /// One word or sentence for `status`.
    pub fn last_result(&self) -> String {
        let via = match (&self.challenge, &self.challenge_reason) {
            (Some(challenge), Some(reason)) => format!(" via {challenge} ({reason})"),
            (Some(challenge), None) => format!(" via {challenge}"),
            _ => String::new(),
        };
        match (&self.last_error, self.last_success) {
            (Some(warning), _) if self.failures == 0 => format!("issued{via}, but {warning}"),
            (Some(error), _) => format!("failed ({}x){via}: {error}", self.failures),
            (None, Some(_)) => format!("ok{via}"),
            (None, None) => "-".into(),
        }
    }
}

fn state_path(store: &Store, name: &str) -> std::path::PathBuf {
    store.cert_dir(name).join("state.json")
}
