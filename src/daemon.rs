//! `certkeeper run`: the long-running daemon. Wires the listener, the schedule, renewals and
//! signals together; the details live in the modules it calls.
//!
//! One loop: find the certificate due soonest, sleep until then (or a signal), renew it, record
//! the outcome. SIGHUP re-reads the config (the listener stays); SIGTERM/SIGINT stop, abandoning
//! an order in flight but never a deployment in progress, so no file is ever half-written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::acme::AcmeClient;
use crate::challenge::http01::{self, ListenError, Tokens};
use crate::config::{CertificateConfig, Config, ConfigError};
use crate::deploy::deploy;
use crate::plan::plan;
use crate::renew::{self, Obtained, RenewError};
use crate::store::Store;
use crate::timefmt;

/// Re-evaluate at least this often, so a suspended machine or a clock jump is noticed.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
/// How long to leave a certificate alone when its state file could not be written.
const STATE_UNSAVED_HOLD: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
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
    store: Store,
    tokens: Tokens,
    /// Connected on first need and kept; dropped when the config is re-read.
    acme: Option<AcmeClient>,
    announced: Option<(String, SystemTime)>,
    /// Certificates whose last outcome could not be saved, and until when to leave them be.
    held: HashMap<String, SystemTime>,
}

pub async fn run(config_path: PathBuf, config: Config) -> Result<(), DaemonError> {
    let mut signals = Signals::new()?;
    let listener = http01::bind(config.daemon.listen)?;
    let tokens = Tokens::default();
    let (stop_server, stopped) = watch::channel(());
    let server = tokio::spawn(http01::serve(listener, tokens.clone(), async move {
        let mut stopped = stopped;
        let _ = stopped.changed().await;
    }));
    tracing::info!(
        listen = %config.daemon.listen,
        certificates = config.certificates.len(),
        state_dir = %config.daemon.state_dir.display(),
        "certkeeper is running"
    );
    let mut daemon = Daemon {
        store: Store::new(&config.daemon.state_dir),
        config_path,
        config,
        tokens,
        acme: None,
        announced: None,
        held: HashMap::new(),
    };

    daemon.repair_outputs();
    loop {
        let now = SystemTime::now();
        let next = daemon.next_due(now);
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
        let obtained = tokio::select! {
            obtained = daemon.obtain(&cert) => obtained,
            _ = signals.stop() => {
                tracing::info!(name = %cert.name, "stopping: the order in flight is abandoned; no file was changed");
                break;
            }
        };
        let result = match obtained {
            Ok(obtained) => deploy(&daemon.store, &cert, &obtained.bundle)
                .await
                .map(|_| obtained.leaf.not_after)
                .map_err(RenewError::from),
            Err(e) => Err(e),
        };
        daemon.record(&cert, started, result);
    }

    tracing::info!("certkeeper stopped");
    let _ = stop_server.send(());
    let _ = server.await;
    Ok(())
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

    async fn obtain(&mut self, cert: &CertificateConfig) -> Result<Obtained, RenewError> {
        let acme = match self.acme.take() {
            Some(acme) => acme,
            None => {
                let config = &self.config.acme;
                AcmeClient::connect(config, &config.directory, &self.store).await?
            }
        };
        let mut acme = acme;
        let obtained = renew::obtain(&mut acme, &self.tokens, &self.store, cert).await;
        self.acme = Some(acme);
        obtained
    }

    fn record(
        &mut self,
        cert: &CertificateConfig,
        started: Instant,
        result: Result<SystemTime, RenewError>,
    ) {
        // Without a saved state the schedule would say "due now" again at once: hold the
        // certificate back in memory instead of hammering the CA.
        match renew::record(&self.store, &cert.name, result.as_ref().map(|_| ())) {
            Ok(()) => self.held.remove(&cert.name),
            Err(_) => self
                .held
                .insert(cert.name.clone(), SystemTime::now() + STATE_UNSAVED_HOLD),
        };
        match result {
            Ok(not_after) => tracing::info!(
                name = %cert.name,
                not_after = %timefmt::utc(not_after),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "certificate issued and deployed"
            ),
            Err(e) => tracing::error!(name = %cert.name, error = %e, "renewal failed"),
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
                self.config = config;
                self.acme = None;
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
