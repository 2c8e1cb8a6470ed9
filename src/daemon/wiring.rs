//! What runs beside the engine's loop. `certkeeper run` wires in the port-80 listener, the
//! control socket, cluster mode, the monitor and the metrics endpoint; a one-off run wires in
//! nothing (it binds the listener on first need). The loop is the same for both.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::DaemonError;
use super::cluster::{self, Membership};
use crate::challenge::http01::{self, Tokens};
use crate::cluster::Cluster;
use crate::config::{CertificateConfig, Config, Method};
use crate::daemon::control::Call;
use crate::daemon::control::server::ControlSocket;
use crate::daemon::notifications::Notifier;

pub(super) struct Wiring {
    /// Answers HTTP-01 challenges (shared through etcd in cluster mode).
    pub tokens: Tokens,
    /// Whether the port-80 listener is up.
    pub listening: bool,
    /// Cluster mode: the renewal lease and the sync with etcd.
    pub membership: Option<Membership>,
    /// Cluster mode: `true` while this node holds the renewal lease.
    pub leadership: Option<watch::Receiver<bool>>,
    /// Cluster mode, a one-off `check`: the cluster whose nodes probe too, holding a lease for
    /// the probe token it shares through etcd (released when the run ends).
    pub checking_with: Option<Cluster>,
    /// The config as the metrics endpoint and the monitor see it; updated on SIGHUP.
    pub published: watch::Sender<Arc<Config>>,
    pub servers: Servers,
}

/// The tasks serving beside the loop, and how they are told to stop.
pub(super) struct Servers {
    running: Vec<JoinHandle<()>>,
    stop: watch::Sender<()>,
}

impl Wiring {
    /// `certkeeper run`: every server, bound before the loop starts (a port that cannot be
    /// had is an error at start, not at the first renewal).
    pub fn service(
        config: &Config,
        control: ControlSocket,
        calls: mpsc::Sender<Call>,
    ) -> Result<Wiring, DaemonError> {
        let mut wiring = Wiring::once(config);
        // Only certificates without a webroot need certkeeper's own port-80 listener.
        let listener = match config.certificates.iter().any(needs_http01_listener) {
            true => Some(http01::bind(config.daemon.listen)?),
            false => None,
        };
        let metrics = match config.daemon.metrics_listen {
            Some(addr) => Some(bind_metrics(addr)?),
            None => None,
        };
        let clustered = match &config.cluster {
            Some(settings) => Some((Cluster::new(settings)?, settings.sync_interval)),
            None => None,
        };
        if let Some((cluster, _)) = &clustered {
            wiring.tokens = Tokens::shared(cluster.shared_answers());
        }
        if let Some(listener) = listener {
            // In cluster mode this node probes for the others on its listener, and says where.
            let peer_probes = match &clustered {
                Some((cluster, _)) => {
                    let stopped = wiring.servers.until_stopped();
                    cluster::announce_probe(cluster, config, stopped, &mut wiring.servers.running)
                }
                None => None,
            };
            let route = peer_probes.map(|probes| probes as Arc<dyn http01::Route>);
            let serving = http01::serve(
                listener,
                wiring.tokens.clone(),
                route,
                wiring.servers.until_stopped(),
            );
            wiring.servers.running.push(tokio::spawn(serving));
            wiring.listening = true;
        }
        let serving = super::control::server::serve(control, calls, wiring.servers.until_stopped());
        wiring.servers.running.push(tokio::spawn(serving));
        // Cluster mode: follow the renewal lease (given up on stop, so another node takes over).
        if let Some((cluster, interval)) = clustered {
            let (leader, follower) = watch::channel(false);
            let leading =
                crate::cluster::lead(cluster.clone(), leader, wiring.servers.until_stopped());
            wiring.servers.running.push(tokio::spawn(leading));
            wiring.leadership = Some(follower.clone());
            wiring.membership = Some(Membership::new(cluster, follower, interval));
        }
        let watched = wiring.published.subscribe();
        let notifier = Notifier::new(config.notify.clone());
        let monitoring =
            super::monitor::watch(watched.clone(), notifier, wiring.servers.until_stopped());
        wiring.servers.running.push(tokio::spawn(monitoring));
        if let Some(listener) = metrics {
            let serving = super::metrics::serve(listener, watched, wiring.servers.until_stopped());
            wiring.servers.running.push(tokio::spawn(serving));
        }
        tracing::info!(
            listen = %config.daemon.listen,
            metrics = ?config.daemon.metrics_listen,
            control = %config.daemon.control_socket.display(),
            certificates = config.certificates.len(),
            state_dir = %config.daemon.state_dir.display(),
            "certkeeper is running"
        );
        Ok(wiring)
    }

    /// A one-off run: nothing beside the loop (it binds the listener on first need).
    pub fn once(config: &Config) -> Wiring {
        raise_open_file_limit();
        Wiring {
            tokens: Tokens::default(),
            listening: false,
            membership: None,
            leadership: None,
            checking_with: None,
            published: watch::channel(Arc::new(config.clone())).0,
            servers: Servers {
                running: Vec::new(),
                stop: watch::channel(()).0,
            },
        }
    }
}

impl Wiring {
    /// A one-off `check`: nothing beside the loop but, in cluster mode, the cluster, so that
    /// the probe token is shared through etcd and the other nodes are asked for their view, as
    /// the daemon would. Without etcd, the check goes on alone (its `cluster` row says why).
    pub async fn checking(config: &Config) -> Wiring {
        let mut wiring = Wiring::once(config);
        if let Some(settings) = &config.cluster
            && let Ok(cluster) = Cluster::new(settings)
            && cluster.hold(CHECK_LEASE).await.is_ok()
        {
            wiring.tokens = Tokens::shared(cluster.shared_answers());
            wiring.checking_with = Some(cluster);
        }
        wiring
    }
}

/// How long a one-off `check` holds its etcd lease: its probe token goes with it.
const CHECK_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

impl Servers {
    /// Changes when the servers are told to stop (for servers started later, like a one-off
    /// run's listener).
    pub fn stopping(&self) -> watch::Receiver<()> {
        self.stop.subscribe()
    }

    /// Resolves when the servers are told to stop.
    pub fn until_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.stop.subscribe();
        async move {
            let _ = stopped.changed().await;
        }
    }

    /// Stops every server and waits for each to end.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        for server in self.running {
            let _ = server.await;
        }
    }
}

/// Whether `cert` may need certkeeper's own port-80 listener: HTTP-01 without a webroot.
pub(super) fn needs_http01_listener(cert: &CertificateConfig) -> bool {
    cert.webroot.is_none() && cert.challenge.allows(Method::Http01)
}

fn bind_metrics(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, DaemonError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std);
    listener.map_err(|source| DaemonError::Metrics { addr, source })
}

/// Lets the listener hold as many connections as its cap (plus files and sockets of our own):
/// the soft limit is often 1024, far below what a flood of idle connections needs.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let wanted = crate::net::http_server::MAX_CONNECTIONS as u64 + 1024;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < wanted
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, wanted.min(hard), hard)
    {
        tracing::warn!(error = %e, soft, "cannot raise the open-file limit; a flood of connections may lock out the CA");
    }
}
