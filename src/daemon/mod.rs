//! The renewal engine: `certkeeper run` runs it for ever, and a one-off `renew` with no daemon
//! running runs it once. The two differ in what is wired in beside the loop (`wiring`: the
//! listener, control socket, cluster, monitor and metrics, or nothing) and in whether the loop
//! follows the schedule. What to do is decided by the `core` (pure, with a `Slot` per
//! certificate in `slots`); this file does it. One renewal is one task
//! (`crate::renewal::renew`).
//!
//! One loop: answer control requests, start every certificate that is due or asked for (up to
//! `acme.concurrency` at once per CA, within the CA's rate limits), sleep until the next is
//! due, a renewal ends, a request or a signal comes, record outcomes. SIGHUP re-reads the
//! config (the listener stays); SIGTERM/SIGINT stop, abandoning orders in flight but never a
//! deployment in progress, so no file is ever half-written.

pub(crate) mod check;
pub mod control;
pub(crate) mod inspect;
pub(crate) mod metrics;
pub(crate) mod monitor;
pub(crate) mod notifications;
pub(crate) mod sdnotify;
pub(crate) mod status;

mod cluster;
mod core;
mod expiry;
mod requests;
mod slots;
mod wiring;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::acme::Accounts;
use crate::challenge::dns01::Dns01;
use crate::challenge::http01::{self, ListenError, Tokens};
use crate::challenge::tls_alpn01::TlsAlpn01;
use crate::cluster::{Cluster, ClusterError};
use crate::config::{AcmeConfig, CertificateConfig, Config, ConfigError};
use crate::daemon::control::server::ControlError;
use crate::daemon::control::{Call, Deferral, RenewalResult, Replies, Request};
use crate::daemon::notifications::{Event as Notification, Notifier, NotifyEventName};
use crate::deploy::store::Store;
use crate::preflight::Preflight;
use crate::renewal;
use crate::renewal::plan::{Plan, plan};
use crate::renewal::ratelimit::{self, Deferred, Ledger};
use crate::renewal::{Context, Finished, Outcome};
use crate::timefmt;
use cluster::Membership;
use core::{Action, Core, Mode, Start, Wake, World};
use wiring::Wiring;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cluster mode: {0}")]
    Cluster(#[from] ClusterError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot serve metrics on {addr}: {source}; change daemon.metrics_listen")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

enum Event {
    Stop,
    Reload,
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Self, DaemonError> {
        let make = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Self {
            term: make(SignalKind::terminate())?,
            int: make(SignalKind::interrupt())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop,
            _ = self.int.recv() => Event::Stop,
            _ = self.hup.recv() => Event::Reload,
        }
    }

    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

struct Daemon {
    /// What to do, and each certificate's state.
    core: Core,
    config_path: PathBuf,
    /// Shared, so that the loop walks the certificates without copying them at every turn.
    config: Arc<Config>,
    /// The config as the metrics endpoint sees it; updated on SIGHUP.
    published: watch::Sender<Arc<Config>>,
    context: Context,
    notifier: Notifier,
    /// The certificate name of each renewal task, and whether it is a dry run.
    tasks: HashMap<tokio::task::Id, (String, bool)>,
    /// What was ordered from each CA lately (directory → ledger).
    ledgers: HashMap<String, Ledger>,
    /// Cluster mode: the renewal lease and the sync with etcd.
    cluster: Option<Membership>,
    /// `renew` requests waiting for their certificates.
    waiters: Vec<requests::Waiter>,
    listener: Listener,
    /// When the loop next wakes up to renew.
    next_wakeup: Option<SystemTime>,
}

/// `certkeeper run`: the daemon, until SIGTERM.
pub async fn run(config_path: PathBuf, config: Config) -> Result<(), DaemonError> {
    // First, so that a second daemon is told that one runs, not that port 80 is taken.
    let control = crate::daemon::control::server::bind(&config.daemon.control_socket)?;
    let (calls, requests) = mpsc::channel(16);
    let wiring = Wiring::service(&config, control, calls)?;
    engine(Mode::Service, config_path, config, requests, wiring).await
}

/// A one-off command with no daemon running: the same engine, run until it has answered
/// `request`.
pub async fn once(
    config_path: PathBuf,
    config: Config,
    request: Request,
    replies: Replies,
) -> Result<(), DaemonError> {
    let (calls, requests) = mpsc::channel(1);
    // The only request: with its sender gone, the loop hears of no other.
    let _ = calls.try_send(Call { request, replies });
    drop(calls);
    let state_dir = config.daemon.state_dir.clone();
    let wiring = Wiring::once(&config);
    let ran = engine(Mode::Once, config_path, config, requests, wiring).await;
    // Run by root against the service's state directory: what it wrote goes back to the
    // service's user, or the service could not read its own key afterwards.
    crate::deploy::store::hand_back(&state_dir);
    ran
}

/// The loop, for a service and a one-off run alike: they differ in what `wiring` holds and in
/// what `mode` asks of the loop (follow the schedule and tell systemd, or end once answered).
async fn engine(
    mode: Mode,
    config_path: PathBuf,
    config: Config,
    mut requests: mpsc::Receiver<Call>,
    wiring: Wiring,
) -> Result<(), DaemonError> {
    let mut signals = Signals::new()?;
    let Wiring {
        tokens,
        listening,
        membership,
        mut leadership,
        published,
        servers,
    } = wiring;
    let context = Context {
        store: Store::new(&config.daemon.state_dir),
        tokens,
        tls_alpn01: TlsAlpn01::new(config.daemon.tls_alpn_listen),
        accounts: Accounts::default(),
        dns01: dns01_of(&config),
        preflight: preflight_of(&config, membership.as_ref().map(|m| &m.cluster)),
        cluster: membership.as_ref().map(|m| m.cluster.clone()),
    };
    let listener = Listener {
        up: listening,
        addr: config.daemon.listen,
        tokens: context.tokens.clone(),
        shutdown: servers.stopping(),
    };
    let mut daemon = Daemon {
        core: Core::new(mode),
        waiters: Vec::new(),
        listener,
        next_wakeup: None,
        context,
        notifier: Notifier::new(config.notify.clone()),
        config_path,
        config: Arc::new(config),
        published,
        tasks: HashMap::new(),
        ledgers: HashMap::new(),
        cluster: membership,
    };
    daemon.begin();
    let mut orders = OrderStop::new();
    let mut renewals = JoinSet::new();
    loop {
        let now = SystemTime::now();
        while let Ok(call) = requests.try_recv() {
            daemon.answer_call(call, now);
        }
        daemon.warn_of_expiry(now);
        // Asking the CA (or etcd) may take a while when it is slow: SIGTERM must not wait,
        // except for deployments, which always finish.
        let fetched = tokio::select! {
            fetched = daemon.fetch_cluster() => fetched,
            _ = signals.stop() => break,
        };
        if let Some(fetched) = fetched {
            daemon.apply_cluster(fetched).await;
        }
        tokio::select! {
            () = daemon.refresh_ari(now) => {}
            _ = signals.stop() => break,
        }
        daemon.start_due(now, &mut renewals, orders.receiver());
        if mode == Mode::Once && daemon.idle() {
            break;
        }
        let wait = daemon.sleep_for(now);
        let until_sync = daemon.cluster.as_ref().map_or(wait, |m| m.until_sync());
        tokio::select! {
            // A timed wake-up reads every plan afresh (a one-off `renew` may have run).
            _ = tokio::time::sleep(wait) => daemon.core.slots.forget_plans(),
            _ = tokio::time::sleep(until_sync), if until_sync < wait => {}
            Some(leading) = leadership_change(&mut leadership) => daemon.leadership_changed(leading, &mut orders),
            Some(finished) = renewals.join_next_with_id(), if !renewals.is_empty() => daemon.finish(finished),
            Some(call) = requests.recv() => daemon.answer_call(call, SystemTime::now()),
            event = signals.next() => match event {
                Event::Stop => break,
                Event::Reload => {
                    let _ = daemon.reload_config();
                }
            },
        }
    }

    if mode == Mode::Service {
        sdnotify::stopping();
    }
    // Orders in flight are abandoned at once; deployments in progress finish first.
    orders.abandon_running();
    while let Some(finished) = renewals.join_next_with_id().await {
        daemon.finish(finished);
    }
    // Whatever was asked and not started will not be.
    let stopping = || RenewalResult::Deferred(Deferral::Stopping);
    let (live, dry) = daemon.core.slots.take_unstarted();
    for name in live {
        daemon.answer(requests::unordered(&name, false, stopping()));
    }
    for name in dry {
        daemon.answer(requests::unordered(&name, true, stopping()));
    }
    if mode == Mode::Service {
        tracing::info!("certkeeper stopped");
    }
    servers.stop().await;
    daemon.notifier.flush(Duration::from_secs(5)).await;
    Ok(())
}

/// Tells renewal tasks to give up their orders (never a deployment): when the daemon stops,
/// and when this node loses the cluster's renewal lease.
struct OrderStop {
    sender: watch::Sender<bool>,
    receiver: watch::Receiver<bool>,
}

impl OrderStop {
    fn new() -> Self {
        let (sender, receiver) = watch::channel(false);
        OrderStop { sender, receiver }
    }

    /// What each new renewal task watches.
    fn receiver(&self) -> &watch::Receiver<bool> {
        &self.receiver
    }

    /// Abandons the orders of running tasks; tasks started later are not affected.
    fn abandon_running(&mut self) {
        let _ = self.sender.send(true);
        *self = OrderStop::new();
    }
}

impl Daemon {
    fn store(&self) -> &Store {
        &self.context.store
    }

    /// A service first repairs what an interrupted run left, then tells systemd it is ready.
    fn begin(&mut self) {
        if self.core.mode == Mode::Service {
            self.repair_outputs();
            let first = self.wake(SystemTime::now()).next;
            sdnotify::ready(&self.summary(first.as_ref()));
            sdnotify::spawn_watchdog();
        }
    }

    /// The core and the world it asks, apart, so that both can be borrowed at once.
    fn core_and_world(&mut self) -> (&mut Core, Facts<'_>) {
        let facts = Facts {
            store: &self.context.store,
            acme: &self.config.acme,
            ledgers: &mut self.ledgers,
            listener: &mut self.listener,
        };
        (&mut self.core, facts)
    }

    /// The plan of `cert`, kept or read from disk.
    fn plan_of(&mut self, cert: &CertificateConfig, now: SystemTime) -> &Plan {
        let (core, mut world) = self.core_and_world();
        core.plan_of(cert, now, &mut world)
    }

    /// When the loop wakes up next (a service says so in the log when it is news).
    fn wake(&mut self, now: SystemTime) -> Wake {
        let config = self.config.clone();
        let (core, mut world) = self.core_and_world();
        let wake = core.wake(&config, now, &mut world);
        if wake.announce
            && let Some((index, at)) = wake.next
        {
            let name = &config.certificates[index].name;
            tracing::info!(name = %name, at = %timefmt::utc(at), "next renewal planned");
        }
        wake
    }

    /// How long the loop may sleep (a service tells systemd what comes next).
    fn sleep_for(&mut self, now: SystemTime) -> Duration {
        let wake = self.wake(now);
        self.next_wakeup = wake.next.map(|(_, at)| at);
        if self.core.mode == Mode::Service {
            sdnotify::status(&self.summary(wake.next.as_ref()));
        }
        wake.sleep
    }

    /// Cluster mode: this node took the renewal lease, or lost it.
    fn leadership_changed(&mut self, leading: bool, orders: &mut OrderStop) {
        if leading {
            // Never order what another node renewed a moment ago: a full sync comes first.
            if let Some(membership) = &mut self.cluster {
                membership.resync();
            }
            self.core.slots.forget_plans();
        } else {
            // The next lease holder orders afresh.
            orders.abandon_running();
        }
    }

    /// Whether this node orders certificates: always, except in a cluster without the lease.
    fn renews(&self) -> bool {
        self.cluster.as_ref().is_none_or(Membership::is_leader)
    }

    /// Starts what the core says is due or asked for, and answers the requests that cannot
    /// start.
    fn start_due(
        &mut self,
        now: SystemTime,
        renewals: &mut JoinSet<Finished>,
        stopping: &watch::Receiver<bool>,
    ) {
        let config = self.config.clone();
        let leading = self.renews();
        let (core, mut world) = self.core_and_world();
        for action in core.starts(&config, leading, now, &mut world) {
            match action {
                Action::Start(start) => self.spawn(*start, renewals, stopping),
                Action::Answer {
                    name,
                    dry_run,
                    result,
                } => self.answer(requests::unordered(&name, dry_run, result)),
            }
        }
    }

    /// Starts the renewal task of `start`.
    fn spawn(
        &mut self,
        start: Start,
        renewals: &mut JoinSet<Finished>,
        stopping: &watch::Receiver<bool>,
    ) {
        let Start {
            cert,
            ca,
            dry_run,
            revoke,
        } = start;
        if !dry_run {
            tracing::info!(name = %cert.name, ca = %ca.directory, "renewal started");
        }
        let name = cert.name.clone();
        let task = renewal::renew(
            self.context.clone(),
            cert,
            ca,
            dry_run,
            revoke,
            stopping.clone(),
        );
        let handle = renewals.spawn(task);
        self.tasks.insert(handle.id(), (name, dry_run));
    }

    /// Records how a renewal task ended.
    fn finish(&mut self, joined: Result<(tokio::task::Id, Finished), tokio::task::JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let task = self.tasks.remove(&id);
        match joined.map(|(_, finished)| finished) {
            Ok(Finished::Abandoned { name, dry_run }) => {
                match dry_run {
                    true => self.core.slots.end_dry_run(&name),
                    false => _ = self.core.slots.end(&name),
                }
                let why = RenewalResult::Deferred(Deferral::Abandoned);
                self.answer(requests::unordered(&name, dry_run, why));
            }
            Ok(Finished::Done(outcome)) if outcome.dry_run => {
                self.core.slots.end_dry_run(&outcome.cert.name);
                self.answer_outcome(&outcome);
            }
            Ok(Finished::Done(outcome)) => {
                self.answer_outcome(&outcome);
                if outcome.unpublished
                    && let Some(membership) = &mut self.cluster
                {
                    membership.unpublished.insert(outcome.cert.name.clone());
                }
                let renewal = self.core.slots.end(&outcome.cert.name).unwrap_or(false);
                if outcome.issued {
                    let (names, _) = ratelimit::request_of(&outcome.cert, None);
                    let ca = &outcome.ca;
                    let ledger = self
                        .ledgers
                        .entry(ca.clone())
                        .or_insert_with(|| Ledger::load(&self.context.store, ca));
                    if let Err(e) = ledger.record_issued(&names, renewal, SystemTime::now()) {
                        tracing::warn!(error = %e, "cannot save the rate-limit ledger; counting in memory");
                    }
                }
                self.record(&outcome);
            }
            // A renewal task that panicked is a bug: leave its certificate alone for a while,
            // then try again.
            Err(e) => {
                let (name, dry_run) = task.unwrap_or_default();
                tracing::error!(name = %name, error = %e, "a renewal task failed unexpectedly");
                let why = format!("the renewal task failed unexpectedly: {e}");
                self.answer(requests::unordered(&name, dry_run, core::failed(why)));
                match dry_run {
                    true => self.core.slots.end_dry_run(&name),
                    false => self.core.slots.crashed(&name, SystemTime::now()),
                }
            }
        }
    }

    /// Asks the CA for the renewal window of each certificate whose ARI information is missing
    /// or due for a refresh (the CA's Retry-After). A CA that cannot be reached is asked again
    /// at the next wake-up.
    async fn refresh_ari(&mut self, now: SystemTime) {
        let config = self.config.clone();
        let leading = self.renews();
        let (core, mut world) = self.core_and_world();
        let due = core.ari_wanted(&config, leading, now, &mut world);
        if due.is_empty() {
            return;
        }
        let acme = match self
            .context
            .accounts
            .get(&self.config.acme, &self.context.store)
            .await
        {
            Ok(acme) => acme,
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the CA for renewal windows now");
                return;
            }
        };
        for cert in due {
            if let Err(e) = renewal::refresh_ari(&acme, self.store(), cert, now).await {
                tracing::warn!(name = %cert.name, error = %e, "could not fetch the renewal window (ARI)");
            }
            self.core.slots.forget_plan(&cert.name);
        }
    }

    /// One line for `systemctl status`.
    fn summary(&self, next: Option<&(usize, SystemTime)>) -> String {
        let count = self.config.certificates.len();
        match next {
            None => format!("{count} certificates configured; nothing to do"),
            Some((index, at)) => format!(
                "{count} certificates; next: {} at {}",
                self.config.certificates[*index].name,
                timefmt::utc(*at)
            ),
        }
    }

    /// Raises an error (log and notification), at most hourly per certificate, for each
    /// certificate close to expiry whose renewals keep failing.
    fn warn_of_expiry(&mut self, now: SystemTime) {
        let config = self.config.clone();
        let leading = self.renews();
        let (core, mut world) = self.core_and_world();
        for warning in core.expiry_warnings(&config, leading, now, &mut world) {
            tracing::error!(name = %warning.cert.name, "{}", warning.message);
            self.notifier.send(Notification::new(
                warning.cert,
                NotifyEventName::Expiry,
                warning.message,
                Some(warning.not_after),
            ));
        }
    }

    /// Records how a live renewal ended: the state file, the slot, the log, the notification.
    fn record(&mut self, outcome: &Outcome) {
        let cert = &outcome.cert;
        let saved = renewal::record(&self.context.store, outcome);
        // Unsaved, the state would say "due now" again at once: the slot holds it back.
        let issued = outcome.result.is_ok();
        (self.core.slots).recorded(&cert.name, saved.is_ok(), issued, SystemTime::now());
        match &outcome.result {
            Ok(issued) => {
                let not_after = issued.not_after;
                tracing::info!(
                    name = %cert.name,
                    not_after = %timefmt::utc(not_after),
                    elapsed_ms = outcome.started.elapsed().as_millis() as u64,
                    "certificate issued and deployed"
                );
                let message = format!("new certificate valid until {}", timefmt::utc(not_after));
                self.notifier.send(Notification::new(
                    cert,
                    NotifyEventName::Success,
                    message,
                    Some(not_after),
                ));
            }
            Err(e) => {
                tracing::error!(name = %cert.name, error = %e, "renewal failed");
                let current = self
                    .store()
                    .current(&cert.name)
                    .ok()
                    .flatten()
                    .map(|c| c.leaf.not_after);
                self.notifier.send(Notification::new(
                    cert,
                    NotifyEventName::Failure,
                    e.to_string(),
                    current,
                ));
            }
        }
        // Told ahead, like an expiry: what would make a later renewal fail.
        let not_after = outcome.result.as_ref().ok().map(|issued| issued.not_after);
        for warning in &outcome.warnings {
            self.notifier.send(Notification::new(
                cert,
                NotifyEventName::Expiry,
                warning.clone(),
                not_after,
            ));
        }
    }

    /// Brings output files back in line with `current` after a crash mid-copy.
    fn repair_outputs(&self) {
        for cert in &self.config.certificates {
            self.repair_output(cert);
        }
    }

    /// Brings the output files of `cert` back in line with `current`; what was done, if anything.
    fn repair_output(&self, cert: &CertificateConfig) -> Option<String> {
        match self.store().repair_outputs(&cert.name, &cert.output) {
            Ok(0) => None,
            Ok(n) => {
                tracing::warn!(name = %cert.name, files = n, "repaired output files left out of date by an interrupted run");
                Some(format!(
                    "repaired {n} output file(s) left out of date by an interrupted run"
                ))
            }
            Err(e) => {
                tracing::error!(name = %cert.name, error = %e, "cannot repair output files");
                Some(format!("cannot repair output files: {e}"))
            }
        }
    }

    /// Re-reads the config file; the number of certificates it names, or why it was not taken
    /// (the previous config stays in force).
    fn reload_config(&mut self) -> Result<usize, ConfigError> {
        sdnotify::reloading();
        let reloaded = self.reload_config_file();
        sdnotify::ready(&self.summary(None));
        reloaded
    }

    fn reload_config_file(&mut self) -> Result<usize, ConfigError> {
        match Config::load(&self.config_path) {
            Ok(config) => {
                for warning in &config.warnings {
                    tracing::warn!("{warning}");
                }
                if config.daemon.listen != self.config.daemon.listen {
                    tracing::warn!(
                        listen = %config.daemon.listen,
                        "daemon.listen changed: restart certkeeper to move the listener"
                    );
                }
                let cluster_changed = match (&config.cluster, &self.config.cluster) {
                    (Some(new), Some(old)) => !new.same_as(old),
                    (new, old) => new.is_some() != old.is_some(),
                };
                if cluster_changed {
                    tracing::warn!("[cluster] changed: restart certkeeper for it to take effect");
                }
                if config.daemon.state_dir != self.config.daemon.state_dir {
                    self.context.store = Store::new(&config.daemon.state_dir);
                    self.ledgers.clear();
                }
                tracing::info!(
                    certificates = config.certificates.len(),
                    "configuration re-read"
                );
                self.notifier = Notifier::new(config.notify.clone());
                self.config = Arc::new(config);
                self.published.send_replace(self.config.clone());
                // Renewals in flight finish with what they started with.
                self.context.accounts = Accounts::default();
                self.context.dns01 = dns01_of(&self.config);
                if self.context.tls_alpn01.listen() != self.config.daemon.tls_alpn_listen {
                    self.context.tls_alpn01 = TlsAlpn01::new(self.config.daemon.tls_alpn_listen);
                }
                self.context.preflight =
                    preflight_of(&self.config, self.cluster.as_ref().map(|m| &m.cluster));
                self.core.forget();
                self.repair_outputs();
                Ok(self.config.certificates.len())
            }
            Err(e) => {
                log_config_error(&e);
                Err(e)
            }
        }
    }
}

/// The world as the core sees it: plans on disk, the CAs' rate-limit ledgers, the listener.
struct Facts<'a> {
    store: &'a Store,
    acme: &'a AcmeConfig,
    ledgers: &'a mut HashMap<String, Ledger>,
    listener: &'a mut Listener,
}

impl World for Facts<'_> {
    fn plan(&mut self, cert: &CertificateConfig, now: SystemTime) -> Plan {
        plan(self.store, cert, now)
    }

    fn admit(
        &mut self,
        ca: &str,
        names: &[String],
        renewal: bool,
        now: SystemTime,
    ) -> Result<(), Deferred> {
        let store = self.store;
        let ledger =
            (self.ledgers.entry(ca.to_string())).or_insert_with(|| Ledger::load(store, ca));
        ledger.admit(names, renewal, &self.acme.limits_for(ca), now)?;
        if let Err(e) = ledger.record_order(now) {
            tracing::warn!(error = %e, "cannot save the rate-limit ledger; counting in memory");
        }
        Ok(())
    }

    fn listen(&mut self) -> Result<(), ListenError> {
        self.listener.ensure()
    }
}

/// certkeeper's own port-80 listener: bound at start by a service, on first need by a one-off
/// run.
struct Listener {
    up: bool,
    addr: SocketAddr,
    tokens: Tokens,
    /// Ends the servers (listener, control socket, metrics) when the engine stops.
    shutdown: watch::Receiver<()>,
}

impl Listener {
    fn ensure(&mut self) -> Result<(), ListenError> {
        if self.up {
            return Ok(());
        }
        let listener = http01::bind(self.addr)?;
        let mut shutdown = self.shutdown.clone();
        let stopped = async move {
            let _ = shutdown.changed().await;
        };
        tokio::spawn(http01::serve(listener, self.tokens.clone(), None, stopped));
        self.up = true;
        Ok(())
    }
}

fn log_config_error(e: &ConfigError) {
    tracing::error!(error = %e, "the new configuration is invalid; keeping the previous one");
}

/// The DNS-01 provider of `config`; a broken one is logged and left out (HTTP-01 still works).
fn dns01_of(config: &Config) -> Option<Arc<Dns01>> {
    let dns01 = config.dns01.clone()?;
    Dns01::new(dns01)
        .inspect_err(|e| tracing::error!(error = %e, "dns-01 is unavailable"))
        .ok()
        .map(Arc::new)
}

/// The pre-flight of `config`; in cluster mode it asks the other nodes too.
fn preflight_of(config: &Config, cluster: Option<&Cluster>) -> Option<Arc<Preflight>> {
    Preflight::new(config)
        .inspect_err(|e| tracing::warn!(error = %e, "the pre-flight check is unavailable"))
        .ok()
        .map(|preflight| {
            let peers = cluster.map(|c| Arc::new(c.clone()) as Arc<dyn crate::preflight::Peers>);
            Arc::new(preflight.with_peers(peers))
        })
}

/// The next change of leadership (`Some(true)`: this node took the lease); never, outside a
/// cluster.
async fn leadership_change(leadership: &mut Option<watch::Receiver<bool>>) -> Option<bool> {
    if let Some(leader) = leadership
        && leader.changed().await.is_ok()
    {
        return Some(*leader.borrow_and_update());
    }
    std::future::pending().await
}
