//! What is known about one certificate right now, and when it is next due: joins the store,
//! the state file and the (pure) schedule. Used by the daemon and by `status`.

use std::hash::{Hash, Hasher};
use std::time::SystemTime;

use crate::config::CertificateConfig;
use crate::deploy::bundle::LeafInfo;
use crate::deploy::store::Store;
use crate::renewal::schedule::{self, Due};
use crate::renewal::state::CertState;

#[derive(Clone)]
pub struct Plan {
    /// The current leaf, if it is readable (even if it no longer covers the config).
    pub leaf: Option<LeafInfo>,
    pub state: CertState,
    pub due: Due,
    /// Why the current certificate does not count, when it does not.
    pub problem: Option<String>,
}

pub fn plan(store: &Store, cert: &CertificateConfig, now: SystemTime) -> Plan {
    let state = CertState::load(store, &cert.name);
    let (leaf, problem) = match store.current(&cert.name) {
        Ok(Some(current)) => {
            let revoked = state
                .revoked
                .as_ref()
                .is_some_and(|r| r.serial == current.leaf.serial);
            let problem = match revoked {
                true => Some("current certificate was revoked".to_string()),
                false => usable_problem(&current.leaf, cert, now),
            };
            (Some(current.leaf), problem)
        }
        Ok(None) => (None, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let usable = leaf.as_ref().filter(|_| problem.is_none());
    let jitter = usable.map_or(0.0, |l| jitter(&cert.name, &l.serial));
    let due = schedule::next_due(usable, &state, jitter);
    Plan {
        leaf,
        state,
        due,
        problem,
    }
}

/// A current certificate that does not cover the configured names (the config changed) or has
/// expired is no reason to wait: order a new one at once.
fn usable_problem(leaf: &LeafInfo, cert: &CertificateConfig, now: SystemTime) -> Option<String> {
    let missing: Vec<&str> = cert
        .domains
        .iter()
        .filter(|d| !leaf.names.iter().any(|n| d.is_covered_by(n)))
        .map(|d| d.as_str())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "current certificate does not cover {}",
            missing.join(", ")
        ));
    }
    (leaf.not_after <= now).then(|| "current certificate has expired".to_string())
}

/// A stable fraction in 0..1 per certificate and serial: the same answer on every evaluation
/// and after a restart, yet spread across certificates issued at the same moment.
fn jitter(name: &str, serial: &str) -> f64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (name, serial).hash(&mut hasher);
    (hasher.finish() % 10_000) as f64 / 10_000.0
}
