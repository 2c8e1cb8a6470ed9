//! Watching the endpoints of `[[monitor]]`: each is inspected on its schedule (as `certkeeper
//! inspect` does), what was seen is kept in `STATE_DIR/monitors.json` for `status` and the
//! metrics, and a person is told when an endpoint turns bad (a failure) or nears its expiry
//! (a warning), once per change, not at every look.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Config, MonitorConfig};
use crate::inspect::{self, Target};
use crate::notifications::{Event, Notifier, NotifyEventName};
use crate::preflight::Severity;
use crate::store::{FileMode, Store, write_atomic};

const FILE: &str = "monitors.json";

/// The last look at one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub endpoint: String,
    pub name: String,
    /// When it was looked at (UTC).
    pub at: String,
    /// The worst finding.
    pub severity: Severity,
    pub message: String,
    pub days_left: Option<i64>,
}

/// What was last seen of every monitored endpoint (empty when nothing was yet).
pub fn load(store: &Store) -> Vec<Seen> {
    std::fs::read(store.root().join(FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Looks at each endpoint of the current config on its schedule until `shutdown`.
pub async fn watch(
    mut config: watch::Receiver<Arc<Config>>,
    mut notifier: Notifier,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut next: HashMap<String, Instant> = HashMap::new();
    let mut seen: HashMap<String, Seen> = HashMap::new();
    loop {
        let current = config.borrow_and_update().clone();
        let store = Store::new(&current.daemon.state_dir);
        let now = Instant::now();
        let mut changed = false;
        for monitor in &current.monitors {
            if next.get(&monitor.endpoint).is_some_and(|at| *at > now) {
                continue;
            }
            next.insert(monitor.endpoint.clone(), now + monitor.every);
            let looked = look(monitor).await;
            let before = seen.get(&monitor.endpoint).map(|s| s.severity);
            if before != Some(looked.severity) {
                tell(&notifier, &looked, before);
            }
            seen.insert(monitor.endpoint.clone(), looked);
            changed = true;
        }
        // Endpoints no longer configured are forgotten.
        seen.retain(|endpoint, _| current.monitors.iter().any(|m| m.endpoint == *endpoint));
        if changed {
            save(&store, &seen);
        }
        let wait = next
            .values()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(200));
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
            Ok(()) = config.changed() => {
                notifier = Notifier::new(config.borrow().notify.clone());
                next.clear();
            }
        }
    }
}

async fn look(monitor: &MonitorConfig) -> Seen {
    let owned = monitor.clone();
    let inspected = tokio::task::spawn_blocking(move || {
        let target = Target {
            address: &owned.endpoint,
            name: &owned.name,
            roots: owned.root.as_deref(),
            files: None,
            clock: None,
        };
        inspect::inspect(&target, SystemTime::now())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let at = crate::timefmt::utc(SystemTime::now());
    let (severity, message, days_left) = match inspected {
        Ok(report) => {
            let worst = report.findings.iter().max_by_key(|f| f.severity);
            (
                worst.map_or(Severity::Ok, |f| f.severity),
                worst.map_or(String::new(), |f| f.message.clone()),
                report.days_left,
            )
        }
        Err(why) => (Severity::Fail, why, None),
    };
    tracing::debug!(endpoint = %monitor.endpoint, ?severity, "monitored endpoint looked at");
    Seen {
        endpoint: monitor.endpoint.clone(),
        name: monitor.name.clone(),
        at,
        severity,
        message,
        days_left,
    }
}

/// Tells a person of an endpoint that turned bad, or back to good after being bad.
fn tell(notifier: &Notifier, seen: &Seen, before: Option<Severity>) {
    let event = match seen.severity {
        Severity::Fail => NotifyEventName::Failure,
        Severity::Warn => NotifyEventName::Expiry,
        Severity::Ok => {
            if before.is_some_and(|b| b != Severity::Ok) {
                tracing::info!(endpoint = %seen.endpoint, "the monitored endpoint is fine again");
            }
            return;
        }
    };
    tracing::warn!(endpoint = %seen.endpoint, name = %seen.name, "{}", seen.message);
    notifier.send(Event::for_endpoint(
        &seen.endpoint,
        &seen.name,
        event,
        format!("{} ({}): {}", seen.endpoint, seen.name, seen.message),
    ));
}

fn save(store: &Store, seen: &HashMap<String, Seen>) {
    let mut all: Vec<&Seen> = seen.values().collect();
    all.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    let json = serde_json::to_vec_pretty(&all).unwrap_or_default();
    let path = store.root().join(FILE);
    let written = crate::store::create_dir(store.root())
        .and_then(|()| write_atomic(&path, &json, FileMode::PRIVATE));
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot save what the monitored endpoints showed");
    }
}
