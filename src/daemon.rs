//! `certkeeper run`: the long-running daemon. Wires the listener, the schedule, renewals and
//! signals together; the details live in the modules it calls.
//!
//! One loop: find the certificate due soonest, sleep until then (or a signal), renew it, record
//! the outcome. SIGHUP re-reads the config (the listener stays); SIGTERM/SIGINT stop, abandoning
//! an order in flight but never a deployment in progress, so no file is ever half-written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::acme::AcmeClient;
use crate::acme::Solvers;
use crate::challenge::choice::Choice;
use crate::challenge::dns01::Dns01;
use crate::challenge::http01::{self, ListenError, Tokens};
use crate::config::{CertificateConfig, Config, ConfigError};
use crate::deploy::deploy;
use crate::notifications::{Event as Notification, Notifier, NotifyEventName};
use crate::plan::plan;
use crate::preflight::Preflight;
use crate::renew::{self, Attempt, RenewError};
use crate::store::Store;
use crate::{metrics, schedule, sdnotify, timefmt};

/// Re-evaluate at least this often, so a suspended machine or a clock jump is noticed.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
/// How often the expiry warning of one certificate is repeated.
const EXPIRY_WARNING_EVERY: Duration = Duration::from_secs(3600);
/// How long to leave a certificate alone when its state file could not be written.
const STATE_UNSAVED_HOLD: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Listen(#[from] ListenError),
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
    config_path: PathBuf,
    config: Config,
    /// The config as the metrics endpoint sees it; updated on SIGHUP.
    published: watch::Sender<Arc<Config>>,
    store: Store,
    tokens: Tokens,
    notifier: Notifier,
    dns01: Option<Dns01>,
    preflight: Option<Preflight>,
    /// Connected on first need and kept; dropped when the config is re-read.
    acme: Option<AcmeClient>,
    announced: Option<(String, SystemTime)>,
    /// Certificates whose last outcome could not be saved, and until when to leave them be.
    held: HashMap<String, SystemTime>,
    /// When each certificate's expiry warning was last raised (at most hourly).
    warned: HashMap<String, Instant>,
}

pub async fn run(config_path: PathBuf, config: Config) -> Result<(), DaemonError> {
    let mut signals = Signals::new()?;
    raise_open_file_limit();
    // Only certificates without a webroot need certkeeper's own port-80 listener.
    let listener = match config.certificates.iter().any(|c| c.webroot.is_none()) {
        true => Some(http01::bind(config.daemon.listen)?),
        false => None,
    };
    let metrics_listener = match config.daemon.metrics_listen {
        Some(addr) => Some(bind_metrics(addr)?),
        None => None,
    };
    let tokens = Tokens::default();
    let (stop_servers, stopped) = watch::channel(());
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.changed().await;
        }
    };
    let mut servers = Vec::new();
    if let Some(listener) = listener {
        servers.push(tokio::spawn(http01::serve(
            listener,
            tokens.clone(),
            until_stopped(),
        )));
    }
    let (published, watched) = watch::channel(Arc::new(config.clone()));
    if let Some(listener) = metrics_listener {
        servers.push(tokio::spawn(metrics::serve(
            listener,
            watched,
            until_stopped(),
        )));
    }
    tracing::info!(
        listen = %config.daemon.listen,
        metrics = ?config.daemon.metrics_listen,
        certificates = config.certificates.len(),
        state_dir = %config.daemon.state_dir.display(),
        "certkeeper is running"
    );
    let mut daemon = Daemon {
        store: Store::new(&config.daemon.state_dir),
        notifier: Notifier::new(config.notify.clone()),
        dns01: dns01_of(&config),
        preflight: preflight_of(&config),
        config_path,
        config,
        published,
        tokens,
        acme: None,
        announced: None,
        held: HashMap::new(),
        warned: HashMap::new(),
    };

    daemon.repair_outputs();
    let first = daemon.next_due(SystemTime::now());
    sdnotify::ready(&daemon.summary(first.as_ref()));
    sdnotify::spawn_watchdog();
    loop {
        let now = SystemTime::now();
        daemon.warn_of_expiry(now);
        // Asking the CA may take a while when it is slow: SIGTERM must not wait for it.
        tokio::select! {
            () = daemon.refresh_ari(now) => {}
            _ = signals.stop() => break,
        }
        let next = daemon.next_due(now);
        sdnotify::status(&daemon.summary(next.as_ref()));
        let wait = next
            .as_ref()
            .map_or(LONGEST_SLEEP, |(_, at)| {
                at.duration_since(now).unwrap_or_default()
            })
            .min(LONGEST_SLEEP);
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => continue,
                event = signals.next() => match event {
                    Event::Stop => break,
                    Event::Reload => { daemon.reload_config(); continue; }
                },
            }
        }
        let Some((index, _)) = next else { continue };
        let cert = daemon.config.certificates[index].clone();
        let started = Instant::now();
        // Only the order is raced against SIGTERM; a deployment, once started, finishes.
        let attempt = tokio::select! {
            attempt = daemon.obtain(&cert) => attempt,
            _ = signals.stop() => {
                tracing::info!(name = %cert.name, "stopping: the order in flight is abandoned; no file was changed");
                break;
            }
        };
        let (choice, ca) = (attempt.choice, attempt.ca);
        let result = match attempt.result {
            Ok(obtained) => deploy(&daemon.store, &cert, &obtained.bundle)
                .await
                .map(|_| obtained.leaf.not_after)
                .map_err(RenewError::from),
            Err(e) => Err(e),
        };
        daemon.record(&cert, started, choice.as_ref(), ca.as_deref(), result);
    }

    sdnotify::stopping();
    tracing::info!("certkeeper stopped");
    let _ = stop_servers.send(());
    for server in servers {
        let _ = server.await;
    }
    daemon.notifier.flush(Duration::from_secs(5)).await;
    Ok(())
}

fn bind_metrics(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std);
    listener.map_err(|source| DaemonError::Metrics { addr, source })
}

impl Daemon {
    /// The certificate due soonest, and when.
    fn next_due(&mut self, now: SystemTime) -> Option<(usize, SystemTime)> {
        let (index, at) = self
            .config
            .certificates
            .iter()
            .enumerate()
            .map(|(i, cert)| {
                let due = plan(&self.store, cert, now).due.at(now);
                let held = self.held.get(&cert.name).copied().unwrap_or(now);
                (i, due.max(held))
            })
            .min_by_key(|(_, at)| *at)?;
        let name = &self.config.certificates[index].name;
        if at > now && self.announced.as_ref() != Some(&(name.clone(), at)) {
            tracing::info!(name = %name, at = %timefmt::utc(at), "next renewal planned");
            self.announced = Some((name.clone(), at));
        }
        Some((index, at))
    }

    /// Asks the CA for the renewal window of each certificate whose ARI information is missing
    /// or due for a refresh (the CA's Retry-After). A CA that cannot be reached is asked again
    /// at the next wake-up.
    async fn refresh_ari(&mut self, now: SystemTime) {
        let due: Vec<CertificateConfig> = self
            .config
            .certificates
            .iter()
            .filter(|cert| renew::ari_due(&self.store, cert, now))
            .cloned()
            .collect();
        if due.is_empty() {
            return;
        }
        if self.acme.is_none() {
            let config = &self.config.acme;
            match AcmeClient::connect(config, &config.directory, &self.store).await {
                Ok(acme) => self.acme = Some(acme),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot ask the CA for renewal windows now");
                    return;
                }
            }
        }
        let Some(acme) = self.acme.as_ref() else {
            return;
        };
        for cert in due {
            if let Err(e) = renew::refresh_ari(acme, &self.store, &cert, now).await {
                tracing::warn!(name = %cert.name, error = %e, "could not fetch the renewal window (ARI)");
            }
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
        for cert in &self.config.certificates {
            let plan = plan(&self.store, cert, now);
            let Some(leaf) = &plan.leaf else { continue };
            let failing = plan.state.failures > 0 || plan.problem.is_some();
            if !failing || now < schedule::warning_time(leaf) {
                continue;
            }
            if self
                .warned
                .get(&cert.name)
                .is_some_and(|at| at.elapsed() < EXPIRY_WARNING_EVERY)
            {
                continue;
            }
            self.warned.insert(cert.name.clone(), Instant::now());
            let left = leaf.not_after.duration_since(now).unwrap_or_default();
            let message = format!(
                "certificate expires in {} ({}) and renewals are failing: {}",
                timefmt::rough(left),
                timefmt::utc(leaf.not_after),
                plan.state
                    .last_error
                    .as_deref()
                    .or(plan.problem.as_deref())
                    .unwrap_or("unknown reason")
            );
            tracing::error!(name = %cert.name, "{message}");
            self.notifier.send(Notification::new(
                cert,
                NotifyEventName::Expiry,
                message,
                Some(leaf.not_after),
            ));
        }
    }

    async fn obtain(&mut self, cert: &CertificateConfig) -> Attempt {
        // The preferred CA, or the next one after repeated failures (`[[acme.ca]]`).
        let failures = crate::state::CertState::load(&self.store, &cert.name).failures;
        let ca = self.config.acme.ca_for(failures);
        let cached = self
            .acme
            .take()
            .filter(|acme| acme.directory() == ca.directory);
        let mut acme = match cached {
            Some(acme) => acme,
            None => match AcmeClient::connect(&ca, &ca.directory, &self.store).await {
                Ok(acme) => acme,
                Err(e) => {
                    return Attempt {
                        ca: Some(ca.directory.clone()),
                        choice: None,
                        result: Err(e.into()),
                    };
                }
            },
        };
        let solvers = Solvers {
            tokens: &self.tokens,
            dns01: self.dns01.as_ref(),
            webroot: None,
        };
        let attempt = renew::obtain(
            &mut acme,
            solvers,
            self.preflight.as_ref(),
            &self.store,
            cert,
        )
        .await;
        self.acme = Some(acme);
        attempt
    }

    fn record(
        &mut self,
        cert: &CertificateConfig,
        started: Instant,
        choice: Option<&Choice>,
        ca: Option<&str>,
        result: Result<SystemTime, RenewError>,
    ) {
        // Without a saved state the schedule would say "due now" again at once: hold the
        // certificate back in memory instead of hammering the CA.
        match renew::record(
            &self.store,
            &cert.name,
            choice,
            ca,
            result.as_ref().map(|_| ()),
        ) {
            Ok(()) => self.held.remove(&cert.name),
            Err(_) => self
                .held
                .insert(cert.name.clone(), SystemTime::now() + STATE_UNSAVED_HOLD),
        };
        match result {
            Ok(not_after) => {
                tracing::info!(
                    name = %cert.name,
                    not_after = %timefmt::utc(not_after),
                    elapsed_ms = started.elapsed().as_millis() as u64,
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
                    .store
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
    }

    /// Brings output files back in line with `current` after a crash mid-copy.
    fn repair_outputs(&self) {
        for cert in &self.config.certificates {
            match self.store.repair_outputs(&cert.name, &cert.output) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(name = %cert.name, files = n, "repaired output files left out of date by an interrupted run")
                }
                Err(e) => {
                    tracing::error!(name = %cert.name, error = %e, "cannot repair output files")
                }
            }
        }
    }
    fn reload_config(&mut self) {
        sdnotify::reloading();
        self.reload_config_file();
        sdnotify::ready(&self.summary(None));
    }

    fn reload_config_file(&mut self) {
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
                if config.daemon.state_dir != self.config.daemon.state_dir {
                    self.store = Store::new(&config.daemon.state_dir);
                }
                tracing::info!(
                    certificates = config.certificates.len(),
                    "configuration re-read"
                );
                self.notifier = Notifier::new(config.notify.clone());
                self.published.send_replace(Arc::new(config.clone()));
                self.config = config;
                self.acme = None;
                self.dns01 = dns01_of(&self.config);
                self.preflight = preflight_of(&self.config);
                self.announced = None;
                self.repair_outputs();
            }
            Err(e) => log_config_error(&e),
        }
    }
}

fn log_config_error(e: &ConfigError) {
    tracing::error!(error = %e, "the new configuration is invalid; keeping the previous one");
}

/// The DNS-01 provider of `config`; a broken one is logged and left out (HTTP-01 still works).
fn dns01_of(config: &Config) -> Option<Dns01> {
    let dns01 = config.dns01.clone()?;
    Dns01::new(dns01)
        .inspect_err(|e| tracing::error!(error = %e, "dns-01 is unavailable"))
        .ok()
}

fn preflight_of(config: &Config) -> Option<Preflight> {
    Preflight::new(config)
        .inspect_err(|e| tracing::warn!(error = %e, "the pre-flight check is unavailable"))
        .ok()
}

/// Lets the listener hold as many connections as its cap (plus files and sockets of our own):
/// the soft limit is often 1024, far below what a flood of idle connections needs.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let wanted = crate::http_server::MAX_CONNECTIONS as u64 + 1024;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < wanted
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard)
    {
        tracing::warn!(error = %e, soft, "cannot raise the open-file limit; a flood of connections may lock out the CA");
    }
}
