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
mod finished;
mod reload;
mod requests;
mod signals;
mod slots;
mod wiring;
mod world;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use self::core::{Action, Asked, Core, FirstLook, Mode, Start, Wake};
use crate::acme::Accounts;
use crate::challenge::http01::ListenError;
use crate::challenge::tls_alpn01::TlsAlpn01;
use crate::cluster::ClusterError;
use crate::config::{CertificateConfig, Config};
use crate::daemon::control::server::ControlError;
use crate::daemon::control::{Call, Deferral, RenewalResult, Replies, Reply, Request};
use crate::daemon::notifications::{Event as Notification, Notifier, NotifyEventName};
use crate::deploy::store::Store;
use crate::renewal;
use crate::renewal::ratelimit::Ledger;
use crate::renewal::{Context, Finished};
use crate::timefmt;
use cluster::Membership;
use reload::{dns01_of, preflight_of};
use signals::{Event, Signals};
use wiring::Wiring;
use world::{Facts, Listener};

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
    /// `check` requests being answered (a one-off run ends once they are).
    checks: JoinSet<()>,
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
    engine(Core::service(), config_path, config, requests, wiring).await
}

/// A one-off command with no daemon running: the same engine, run until it has answered
/// `request`.
pub async fn once(
    config_path: PathBuf,
    config: Config,
    request: Request,
    replies: Replies,
) -> Result<(), DaemonError> {
    let core = Core::once(FirstLook::of(&request));
    let wiring = match &request {
        Request::Check { .. } => Wiring::checking(&config).await,
        _ => Wiring::once(&config),
    };
    let (calls, requests) = mpsc::channel(1);
    // The only request: with its sender gone, the loop hears of no other.
    let _ = calls.try_send(Call { request, replies });
    drop(calls);
    let state_dir = config.daemon.state_dir.clone();
    let ran = engine(core, config_path, config, requests, wiring).await;
    // Run by root against the service's state directory: what it wrote goes back to the
    // service's user, or the service could not read its own key afterwards.
    crate::deploy::store::hand_back(&state_dir);
    ran
}

/// The loop, for a service and a one-off run alike: they differ in what `wiring` holds and in
/// what the core's mode asks of the loop (follow the schedule and tell systemd, or end once
/// answered).
async fn engine(
    core: Core,
    config_path: PathBuf,
    config: Config,
    mut requests: mpsc::Receiver<Call>,
    wiring: Wiring,
) -> Result<(), DaemonError> {
    let mut signals = Signals::new()?;
    let mode = core.mode;
    let Wiring {
        tokens,
        listening,
        membership,
        mut leadership,
        checking_with,
        published,
        servers,
    } = wiring;
    let context = Context {
        store: Store::new(&config.daemon.state_dir),
        tokens,
        tls_alpn01: TlsAlpn01::new(config.daemon.tls_alpn_listen),
        accounts: Accounts::default(),
        dns01: dns01_of(&config),
        preflight: preflight_of(
            &config,
            (membership.as_ref().map(|m| &m.cluster)).or(checking_with.as_ref()),
        ),
        cluster: membership.as_ref().map(|m| m.cluster.clone()),
    };
    let listener = Listener {
        up: listening,
        addr: config.daemon.listen,
        tokens: context.tokens.clone(),
        shutdown: servers.stopping(),
    };
    let mut daemon = Daemon {
        core,
        waiters: Vec::new(),
        listener,
        next_wakeup: None,
        context,
        notifier: Notifier::new(config.notify.clone()),
        config_path,
        config: Arc::new(config),
        published,
        tasks: HashMap::new(),
        checks: JoinSet::new(),
        ledgers: HashMap::new(),
        cluster: membership,
    };
    daemon.begin();
    let mut orders = OrderStop::new();
    let mut renewals = JoinSet::new();
    loop {
        let now = SystemTime::now();
        // Asking the CA (or etcd) may take a while when it is slow: SIGTERM must not wait,
        // except for deployments, which always finish. Stale renewal windows come first: a
        // window the CA moved to now decides whether what a request asks for is due (a
        // one-off `renew` judges that at once).
        tokio::select! {
            () = daemon.refresh_ari(now) => {}
            _ = signals.stop() => break,
        }
        while let Ok(call) = requests.try_recv() {
            daemon.answer_call(call, now);
        }
        daemon.warn_of_expiry(now);
        let fetched = tokio::select! {
            fetched = daemon.fetch_cluster() => fetched,
            _ = signals.stop() => break,
        };
        if let Some(fetched) = fetched {
            daemon.apply_cluster(fetched).await;
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
            Some(_) = daemon.checks.join_next(), if !daemon.checks.is_empty() => {}
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
    // Whatever was asked and not started will not be; a request not even taken is told so.
    while let Ok(call) = requests.try_recv() {
        call.replies
            .send(Reply::failed(1, "certkeeper is stopping; nothing was done"));
    }
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
    if let Some(cluster) = checking_with {
        cluster.release().await;
    }
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

    /// A request to renew `cert` now, as the core takes it.
    fn ask_renewal(
        &mut self,
        cert: &CertificateConfig,
        force: bool,
        dry_run: bool,
        now: SystemTime,
    ) -> Asked {
        let (core, mut world) = self.core_and_world();
        core.ask_renewal(cert, force, dry_run, now, &mut world)
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
