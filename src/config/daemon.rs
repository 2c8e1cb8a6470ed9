//! `[daemon]`: the listener, the state directory, the control socket, the pre-flight's DNS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR, Validator};

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    /// Where Prometheus metrics are served; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// DNS servers for the pre-flight check; empty: the system's.
    pub resolvers: Vec<SocketAddr>,
    /// The port the CA connects to for HTTP-01: 80 for every real CA.
    pub http01_port: u16,
    /// Where the TLS-ALPN-01 responder listens while a validation runs.
    pub tls_alpn_listen: SocketAddr,
    /// The port the CA connects to for TLS-ALPN-01: 443 for every real CA.
    pub tls_alpn_port: u16,
    /// Addresses that reach this host from outside (behind NAT), besides its own interfaces.
    pub public_ip: Vec<std::net::IpAddr>,
    /// The running daemon's control socket, through which `renew`, `check` and `status` reach it.
    pub control_socket: PathBuf,
    /// Whether every order that may use HTTP-01 waits for the pre-flight check (a few seconds
    /// at most).
    pub preflight_before_order: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    state_dir: Option<PathBuf>,
    listen: Option<Spanned<String>>,
    #[serde(default)]
    log_format: LogFormat,
    metrics_listen: Option<Spanned<String>>,
    #[serde(default)]
    resolvers: Vec<Spanned<String>>,
    http01_port: Option<u16>,
    tls_alpn_listen: Option<Spanned<String>>,
    tls_alpn_port: Option<u16>,
    #[serde(default)]
    public_ip: Vec<Spanned<String>>,
    control_socket: Option<PathBuf>,
    preflight_before_order: Option<bool>,
}

impl Validator<'_> {
    pub(super) fn daemon(&self, raw: RawDaemon) -> Result<DaemonConfig, ConfigError> {
        let address = |value: Spanned<String>, key: &str, example: &str| {
            value.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.located.error(
                    value.span(),
                    format!("daemon.{key}: write an address and port such as {example}"),
                )
            })
        };
        let listen = match raw.listen {
            None => SocketAddr::from(([0u16; 8], 80)),
            Some(l) => address(l, "listen", "\"[::]:80\" or \"0.0.0.0:80\"")?,
        };
        let tls_alpn_listen = match raw.tls_alpn_listen {
            None => SocketAddr::from(([0u16; 8], 443)),
            Some(l) => address(l, "tls_alpn_listen", "\"[::]:443\" or \"0.0.0.0:443\"")?,
        };
        let metrics_listen = match raw.metrics_listen {
            None => None,
            Some(m) => Some(address(m, "metrics_listen", "\"127.0.0.1:9586\"")?),
        };
        let resolvers = raw
            .resolvers
            .into_iter()
            .map(|r| address(r, "resolvers", "\"192.0.2.53:53\""))
            .collect::<Result<_, _>>()?;
        let public_ip = raw
            .public_ip
            .into_iter()
            .map(|ip| {
                ip.get_ref().parse().map_err(|_| {
                    self.located.error(
                        ip.span(),
                        "daemon.public_ip: write IP addresses such as \"203.0.113.7\"",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let state_dir = self.absolute(raw.state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into()));
        // The packaged layout uses systemd's RuntimeDirectory; any other state directory gets
        // its own socket beside it, so two configurations never answer for each other.
        let control_socket = match raw.control_socket {
            Some(path) => self.absolute(path),
            None if state_dir == Path::new(DEFAULT_STATE_DIR) => DEFAULT_CONTROL_SOCKET.into(),
            None => state_dir.join("control.sock"),
        };
        Ok(DaemonConfig {
            state_dir,
            control_socket,
            preflight_before_order: raw.preflight_before_order.unwrap_or(true),
            listen,
            log_format: raw.log_format,
            metrics_listen,
            resolvers,
            http01_port: raw.http01_port.unwrap_or(80),
            tls_alpn_listen,
            tls_alpn_port: raw.tls_alpn_port.unwrap_or(443),
            public_ip,
        })
    }
}
