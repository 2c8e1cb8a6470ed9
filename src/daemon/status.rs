//! `certkeeper status`: one row per configured certificate, as a table or JSON.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::{CertificateConfig, Config};
use crate::deploy::store::Store;
use crate::preflight::Verdict;
use crate::renewal::plan::{Plan, plan};
use crate::renewal::ratelimit::{self, Ledger};
use crate::renewal::schedule::{self, Due};
use crate::timefmt;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub domains: Vec<String>,
    /// RFC 3339, or null when no certificate is installed.
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub next_renewal: String,
    pub last_result: String,
    /// The CA's suggested renewal window (ARI) for the current certificate, if it gave one.
    pub ari_window: Option<[String; 2]>,
    /// The directory URL of the CA the last attempt went to.
    pub ca: Option<String>,
    /// The challenge the last attempt used, and why it was chosen.
    pub challenge: Option<String>,
    pub challenge_reason: Option<String>,
    /// Set when the certificate has expired, or is close to expiry while renewals fail: the
    /// operator must act. `status` exits non-zero when any row has one.
    pub alert: Option<String>,
    /// Being renewed right now (known only to a running daemon).
    #[serde(default)]
    pub renewing: bool,
    /// What the pre-flight check found before the last order, per name and address family.
    #[serde(default)]
    pub preflight: Vec<Verdict>,
}

pub fn rows(config: &Config, now: SystemTime) -> Vec<Row> {
    let store = Store::new(&config.daemon.state_dir);
    config
        .certificates
        .iter()
        .map(|cert| {
            let plan = plan(&store, cert, now);
            let not_after = plan.leaf.as_ref().map(|l| l.not_after);
            let days_left = not_after.map(|at| match at.duration_since(now) {
                Ok(left) => (left.as_secs() / 86400) as i64,
                Err(past) => -((past.duration().as_secs() / 86400) as i64) - 1,
            });
            let ari = (plan.leaf.as_ref()).map(|leaf| schedule::ari_window(leaf, &plan.state));
            let mut next_renewal = match (plan.due, rate_limited(config, &store, cert, &plan, now)) {
                (due, Some(until)) if due.at(now) <= now => {
                    format!("{} (the CA's rate limit is spent)", timefmt::utc(until))
                }
                (Due::Missing, _) => "now (no valid certificate)".to_string(),
                (Due::Renewal(at), _) if at <= now => "now".into(),
                (Due::Renewal(at), _) => timefmt::utc(at),
                (Due::Retry(at), _) => format!("retry {}", timefmt::utc(at)),
            };
            if let (Due::Renewal(_), Some(Err(why))) = (plan.due, ari) {
                next_renewal = format!(
                    "{next_renewal} (the CA's renewal window is not used, {why}: the lifetime rule decides)"
                );
            }
            let alert = match &plan.leaf {
                Some(leaf) if leaf.not_after <= now => Some("EXPIRED".to_string()),
                Some(leaf) if now >= schedule::warning_time(leaf) && plan.state.failures > 0 => {
                    Some("EXPIRING, renewals failing".to_string())
                }
                None if plan.state.failures > 0 => {
                    Some("NO CERTIFICATE, renewals failing".to_string())
                }
                _ => None,
            };
            let mut last_result = plan.state.last_result();
            if let Some(problem) = plan.problem {
                last_result = format!("{last_result}; {problem}");
            }
            Row {
                name: cert.name.clone(),
                domains: cert.domains.iter().map(|d| d.to_string()).collect(),
                not_after: not_after.map(timefmt::utc),
                days_left,
                next_renewal,
                last_result,
                ari_window: (ari.and_then(Result::ok).flatten())
                    .map(|(start, end)| [timefmt::utc(start), timefmt::utc(end)]),
                ca: plan.state.ca.clone(),
                challenge: plan.state.challenge.clone(),
                challenge_reason: plan.state.challenge_reason.clone(),
                alert,
                renewing: false,
                preflight: plan.state.preflight.clone(),
            }
        })
        .collect()
}

/// Until when a certificate due now waits for the CA's rate limit (`[acme.limits]`), if it does.
fn rate_limited(
    config: &Config,
    store: &Store,
    cert: &CertificateConfig,
    plan: &Plan,
    now: SystemTime,
) -> Option<SystemTime> {
    let ca = config.acme.ca_for(plan.state.failures);
    let (names, renewal) = ratelimit::request_of(cert, plan.leaf.as_ref());
    Ledger::load(store, &ca.directory)
        .admit(&names, renewal, &config.acme.limits_for(&ca.directory), now)
        .err()
        .map(|deferred| deferred.until)
}
