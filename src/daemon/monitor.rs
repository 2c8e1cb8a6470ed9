//! Watching endpoints: those of `[[monitor]]`, each inspected on its schedule (as `certkeeper
//! inspect` does), and each certificate's `verify` endpoints every `verify_every_secs`, compared
//! with the chain deployed for it (a server restarted onto other files, or never reloaded, is
//! found long before the old certificate expires). What was seen is kept in
//! `STATE_DIR/monitors.json` for `status` and the metrics, and a person is told when an
//! endpoint turns bad (a failure) or nears its expiry (a warning), once per change, not at
//! every look.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{CertificateConfig, Config, Endpoint, MonitorConfig};
use crate::daemon::inspect::{self, Target};
use crate::daemon::notifications::{Event, Notifier, NotifyEventName};
use crate::deploy::store::{FileMode, Store, write_atomic};
use crate::preflight::Severity;

const FILE: &str = "monitors.json";

/// How soon a `verify` endpoint is looked at again when there was nothing to compare it with.
const RETRY_UNSETTLED: Duration = Duration::from_secs(30);

/// The last look at one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub endpoint: String,
    /// The name clients ask for (SNI).
    pub name: String,
    /// For a `verify` endpoint, the certificate it must serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
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
        let watched = Watched::all(&current);
        for item in &watched {
            let key = item.key();
            if next.get(&key).is_some_and(|at| *at > now) {
                continue;
            }
            next.insert(key.clone(), now + item.every());
            let Some(looked) = item.look(&store).await else {
                // Nothing to compare with yet, or a deployment settling: soon again.
                next.insert(key, now + item.every().min(RETRY_UNSETTLED));
                continue;
            };
            let before = seen.get(&key).map(|s| s.severity);
            if before != Some(looked.severity) {
                tell(&notifier, &looked, before);
            }
            seen.insert(key, looked);
            changed = true;
        }
        // Endpoints no longer configured are forgotten.
        seen.retain(|key, _| watched.iter().any(|w| w.key() == *key));
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

/// One endpoint the daemon looks at on a schedule.
enum Watched<'a> {
    Monitor(&'a MonitorConfig),
    /// A `verify` endpoint of a certificate, between deployments.
    Served(&'a CertificateConfig, &'a Endpoint),
}

impl<'a> Watched<'a> {
    fn all(config: &'a Config) -> Vec<Watched<'a>> {
        let served = config
            .certificates
            .iter()
            .filter(|c| !c.verify_every.is_zero())
            .flat_map(|c| c.verify.iter().map(move |e| Watched::Served(c, e)));
        config
            .monitors
            .iter()
            .map(Watched::Monitor)
            .chain(served)
            .collect()
    }

    fn key(&self) -> String {
        match self {
            Watched::Monitor(monitor) => monitor.endpoint.clone(),
            Watched::Served(cert, endpoint) => {
                format!("{} serving {}", endpoint.address, cert.name)
            }
        }
    }

    fn every(&self) -> Duration {
        match self {
            Watched::Monitor(monitor) => monitor.every,
            Watched::Served(cert, _) => cert.verify_every,
        }
    }

    /// What the endpoint shows now; nothing while there is nothing to compare with.
    async fn look(&self, store: &Store) -> Option<Seen> {
        match self {
            Watched::Monitor(monitor) => Some(look(monitor).await),
            Watched::Served(cert, endpoint) => look_served(store, cert, endpoint).await,
        }
    }
}

/// Whether `endpoint` serves the chain deployed for `cert`. Left alone while nothing is
/// deployed, and while a deployment's own reload and live check may still be running (they
/// roll back what does not show).
async fn look_served(store: &Store, cert: &CertificateConfig, endpoint: &Endpoint) -> Option<Seen> {
    let current = store.current(&cert.name).ok()??;
    let deployed_at = std::fs::symlink_metadata(store.current_link(&cert.name))
        .and_then(|m| m.modified())
        .ok()?;
    let settling = cert.reload_timeout + cert.verify_timeout;
    if deployed_at.elapsed().unwrap_or_default() < settling {
        return None;
    }
    let deployed = store.current_chain(&cert.name)?;
    let (severity, message) =
        match crate::deploy::verify::served(endpoint, &cert.name, deployed).await {
            Ok(fine) => (Severity::Ok, fine),
            Err(wrong) => (Severity::Fail, wrong.to_string()),
        };
    let days_left = current
        .leaf
        .not_after
        .duration_since(SystemTime::now())
        .map_or(0, |left| (left.as_secs() / 86_400) as i64);
    Some(Seen {
        endpoint: endpoint.address.clone(),
        name: endpoint.sni.to_string(),
        certificate: Some(cert.name.clone()),
        at: crate::timefmt::utc(SystemTime::now()),
        severity,
        message,
        days_left: Some(days_left),
    })
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
        inspect::inspect(&target, SystemTime::now()).map_err(|e| e.to_string())
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
        certificate: None,
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
    notifier.send(match &seen.certificate {
        // The message names the endpoint already.
        Some(certificate) => {
            Event::for_certificate_endpoint(certificate, &seen.name, event, seen.message.clone())
        }
        None => Event::for_endpoint(
            &seen.endpoint,
            &seen.name,
            event,
            format!("{} ({}): {}", seen.endpoint, seen.name, seen.message),
        ),
    });
}

fn save(store: &Store, seen: &HashMap<String, Seen>) {
    let mut all: Vec<&Seen> = seen.values().collect();
    all.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    let json = serde_json::to_vec_pretty(&all).unwrap_or_default();
    let path = store.root().join(FILE);
    let written = crate::deploy::store::create_dir(store.root())
        .and_then(|()| write_atomic(&path, &json, FileMode::PRIVATE));
    if let Err(e) = written {
        tracing::warn!(error = %e, "cannot save what the monitored endpoints showed");
    }
}
