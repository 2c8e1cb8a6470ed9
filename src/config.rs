//! The TOML configuration: parsed once into typed, validated values.
//!
//! Parsing is strict (`deny_unknown_fields`), and every error names the file, line and key and
//! says what to write instead. Deeper code never re-checks strings: domains are [`DomainName`]s,
//! key types an enum, paths absolute. This module does no network I/O.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod cluster;
mod preflight;
pub use cluster::ClusterConfig;
pub use preflight::PreflightConfig;

use crate::names::DomainName;
use crate::store::FileKind;

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const DEFAULT_PATH: &str = "/etc/certkeeper/certkeeper.toml";
/// The exit code of a bad configuration (sysexits' EX_CONFIG), so systemd can stop restart loops.
pub const EX_CONFIG: u8 = 78;
const DEFAULT_STATE_DIR: &str = "/var/lib/certkeeper";
const DEFAULT_CONTROL_SOCKET: &str = "/run/certkeeper/control.sock";

/// A configuration error, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub acme: AcmeConfig,
    pub daemon: DaemonConfig,
    pub certificates: Vec<CertificateConfig>,
    pub notify: Vec<NotifyTarget>,
    pub dns01: Option<Dns01Config>,
    /// Nodes sharing certificates through etcd; `None` for a single node.
    pub cluster: Option<ClusterConfig>,
    pub preflight: PreflightConfig,
    /// Things that parse but deserve the operator's attention (names written in another case).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The preferred CA (the first `[[acme.ca]]`, or `acme.directory`).
    pub directory: String,
    pub staging_directory: String,
    pub contact: Vec<String>,
    pub eab: Option<ExternalAccount>,
    pub extra_root: Option<PathBuf>,
    /// The other CAs, in order of preference, tried after repeated failure at the one before.
    pub fallbacks: Vec<CaConfig>,
    /// How long one request to the CA may take.
    pub request_timeout: Duration,
    /// How long the CA may take to validate and issue one order.
    pub order_timeout: Duration,
    /// Renewals in flight at once at one CA (the daemon).
    pub concurrency: usize,
    /// `[acme.limits]` as written; see [`AcmeConfig::limits_for`].
    pub limits: Option<RateLimits>,
}

/// The CA's rate limits certkeeper keeps under, counted from its own record of orders so that
/// a thousand certificates due together are spread instead of refused. 0: not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// New orders per account per 3 hours.
    pub orders_per_3h: u32,
    /// New certificates per registered domain (example.com) per 7 days; renewals of the same
    /// set of names are exempt.
    pub certificates_per_domain_per_week: u32,
    /// Certificates for the same set of names per 7 days.
    pub duplicates_per_week: u32,
}

impl RateLimits {
    /// Let's Encrypt's (letsencrypt.org/docs/rate-limits).
    pub const LETS_ENCRYPT: RateLimits = RateLimits {
        orders_per_3h: 300,
        certificates_per_domain_per_week: 50,
        duplicates_per_week: 5,
    };
    pub const NONE: RateLimits = RateLimits {
        orders_per_3h: 0,
        certificates_per_domain_per_week: 0,
        duplicates_per_week: 0,
    };
}

/// A key left out of `[acme.limits]` keeps Let's Encrypt's value.
impl Default for RateLimits {
    fn default() -> Self {
        Self::LETS_ENCRYPT
    }
}

/// One CA of `[[acme.ca]]`.
#[derive(Debug, Clone)]
pub struct CaConfig {
    pub directory: String,
    pub eab: Option<ExternalAccount>,
    pub extra_root: Option<PathBuf>,
}

/// Renewals in flight at once at one CA unless `acme.concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Failed attempts in a row at one CA before the next one is tried.
pub const FAILOVER_AFTER: u32 = 3;

impl AcmeConfig {
    /// The rate limits to keep at the CA `directory`: `[acme.limits]` when written, else Let's
    /// Encrypt's at Let's Encrypt and none elsewhere (other CAs publish other limits, or none).
    pub fn limits_for(&self, directory: &str) -> RateLimits {
        let at_lets_encrypt = directory
            .strip_prefix("https://")
            .and_then(|rest| rest.split('/').next())
            .is_some_and(|host| host.ends_with(".letsencrypt.org"));
        match (self.limits, at_lets_encrypt) {
            (Some(limits), _) => limits,
            (None, true) => RateLimits::LETS_ENCRYPT,
            (None, false) => RateLimits::NONE,
        }
    }

    /// The CA for an attempt after `failures` failed ones in a row: the preferred CA first,
    /// the next after every [`FAILOVER_AFTER`] failures, round and round; after a success,
    /// the preferred one again.
    pub fn ca_for(&self, failures: u32) -> AcmeConfig {
        let count = 1 + self.fallbacks.len() as u32;
        match (failures / FAILOVER_AFTER) % count {
            0 => self.clone(),
            index => {
                let ca = &self.fallbacks[index as usize - 1];
                AcmeConfig {
                    directory: ca.directory.clone(),
                    eab: ca.eab.clone(),
                    extra_root: ca.extra_root.clone(),
                    fallbacks: Vec::new(),
                    ..self.clone()
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExternalAccount {
    pub key_id: String,
    pub hmac_key_file: PathBuf,
}

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
    /// Addresses that reach this host from outside (behind NAT), besides its own interfaces.
    pub public_ip: Vec<std::net::IpAddr>,
    /// The running daemon's control socket, through which `renew`, `check` and `status` reach it.
    pub control_socket: PathBuf,
    /// Whether every order that may use HTTP-01 waits for the pre-flight check (a few seconds
    /// at most).
    pub preflight_before_order: bool,
}

/// Where to tell someone that something happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    pub via: NotifyVia,
    pub events: Vec<NotifyEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyVia {
    /// A shell command; the event is on its stdin as JSON and in CERTKEEPER_* variables.
    Exec(String),
    /// An HTTP(S) URL that receives the event as a JSON POST.
    Webhook(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyEvent {
    Failure,
    Expiry,
    Success,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    #[default]
    EcdsaP256,
    EcdsaP384,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

/// Which challenge proves control of the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Challenge {
    /// HTTP-01 when the pre-flight check passes for every name, else DNS-01 (when configured);
    /// wildcards always DNS-01; an HTTP-01 validation that fails is retried with DNS-01.
    #[default]
    Auto,
    Http01,
    Dns01,
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Challenge::Auto => "auto",
            Challenge::Http01 => "http-01",
            Challenge::Dns01 => "dns-01",
        })
    }
}

/// How TXT records for DNS-01 are published, and where their propagation is checked.
#[derive(Debug, Clone)]
pub struct Dns01Config {
    pub provider: Dns01Provider,
    /// The servers that must answer the TXT value before the CA is told to look; empty: every
    /// authoritative name server of the zone, found through NS records.
    pub check_servers: Vec<SocketAddr>,
    pub propagation_timeout: Duration,
    pub ttl: u32,
}

#[derive(Debug, Clone)]
pub enum Dns01Provider {
    /// RFC 2136 dynamic UPDATE, signed with TSIG.
    Rfc2136 {
        server: SocketAddr,
        zone: String,
        key_name: String,
        algorithm: TsigAlgorithm,
        secret: zeroize::Zeroizing<Vec<u8>>,
    },
    /// `COMMAND present|cleanup FQDN VALUE`, as lego's exec provider.
    Exec { command: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

#[derive(Debug, Clone)]
pub struct CertificateConfig {
    pub name: String,
    pub domains: Vec<DomainName>,
    pub key_type: KeyType,
    pub reuse_key: bool,
    pub challenge: Challenge,
    /// The CA's certificate profile to ask for ("shortlived", "tlsserver", "classic", ...).
    pub profile: Option<String>,
    /// HTTP-01 answers are written here (another server holds port 80 and serves it).
    pub webroot: Option<PathBuf>,
    pub output: Output,
    pub reload: Reload,
    pub reload_timeout: Duration,
    /// TLS endpoints that must serve the new certificate after the reload.
    pub verify: Vec<Endpoint>,
    pub verify_timeout: Duration,
}

/// How the server is told to load the new certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    None,
    /// A shell command (`sh -c`).
    Command(String),
    /// A signal to the PID written in a pidfile (SIGHUP for SRS, ZLMediaKit).
    Signal {
        pidfile: PathBuf,
        signal: String,
    },
    /// `systemctl reload UNIT`.
    Unit(String),
}

/// A live TLS endpoint to check after a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub address: String,
    /// The name sent in SNI.
    pub sni: DomainName,
}

/// Where copies of the current certificate go besides the state directory, and with which
/// ownership. Files holding the private key get `key_mode`; the others 0644.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// A directory certkeeper keeps as a symbolic link to `current`, so that it switches with
    /// it, as one set.
    pub link: Option<PathBuf>,
    /// Single files, each replaced atomically (and repaired at start after a crash).
    pub files: Vec<(FileKind, PathBuf)>,
    /// The PKCS#12 password, when a keystore is wanted (Java servers such as Wowza).
    pub pkcs12_password: Option<zeroize::Zeroizing<String>>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub key_mode: u32,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        })
    }
}

// ---- what the file says, before it makes sense ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    acme: RawAcme,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    certificate: Vec<RawCertificate>,
    #[serde(default)]
    notify: Vec<Spanned<RawNotify>>,
    dns01: Option<Spanned<RawDns01>>,
    cluster: Option<Spanned<cluster::RawCluster>>,
    #[serde(default)]
    preflight: preflight::RawPreflight,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns01 {
    provider: Spanned<String>,
    server: Option<Spanned<String>>,
    zone: Option<Spanned<String>>,
    key_name: Option<String>,
    key_algorithm: Option<Spanned<String>>,
    key_file: Option<Spanned<PathBuf>>,
    command: Option<Spanned<PathBuf>>,
    #[serde(default)]
    check_servers: Vec<Spanned<String>>,
    #[serde(default = "default_propagation_timeout")]
    propagation_timeout_secs: u64,
    #[serde(default = "default_dns_ttl")]
    ttl: u32,
}

fn default_propagation_timeout() -> u64 {
    120
}

fn default_dns_ttl() -> u32 {
    60
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    directory: Option<Spanned<String>>,
    staging_directory: Option<Spanned<String>>,
    #[serde(default)]
    contact: Vec<Spanned<String>>,
    eab: Option<RawEab>,
    extra_root: Option<Spanned<PathBuf>>,
    #[serde(default)]
    ca: Vec<RawCa>,
    #[serde(default = "default_request_timeout")]
    request_timeout_secs: u64,
    #[serde(default = "default_order_timeout")]
    order_timeout_secs: u64,
    concurrency: Option<Spanned<usize>>,
    limits: Option<RateLimits>,
}

fn default_request_timeout() -> u64 {
    30
}

fn default_order_timeout() -> u64 {
    120
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    directory: Spanned<String>,
    eab: Option<RawEab>,
    extra_root: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEab {
    key_id: String,
    hmac_key_file: Spanned<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Option<PathBuf>,
    listen: Option<Spanned<String>>,
    #[serde(default)]
    log_format: LogFormat,
    metrics_listen: Option<Spanned<String>>,
    #[serde(default)]
    resolvers: Vec<Spanned<String>>,
    http01_port: Option<u16>,
    #[serde(default)]
    public_ip: Vec<Spanned<String>>,
    control_socket: Option<PathBuf>,
    preflight_before_order: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    exec: Option<String>,
    webhook: Option<Spanned<String>>,
    events: Option<Vec<NotifyEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    name: Spanned<String>,
    domains: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    key_type: KeyType,
    #[serde(default)]
    reuse_key: bool,
    challenge: Option<Spanned<String>>,
    webroot: Option<Spanned<PathBuf>>,
    profile: Option<Spanned<String>>,
    #[serde(default)]
    output: RawOutput,
    reload: Option<Spanned<String>>,
    reload_pidfile: Option<Spanned<PathBuf>>,
    reload_signal: Option<Spanned<String>>,
    reload_unit: Option<Spanned<String>>,
    #[serde(default = "default_reload_timeout")]
    reload_timeout_secs: u64,
    #[serde(default)]
    verify: Vec<RawEndpoint>,
    #[serde(default = "default_verify_timeout")]
    verify_timeout_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    endpoint: Spanned<String>,
    sni: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    dir: Option<PathBuf>,
    cert: Option<PathBuf>,
    chain: Option<PathBuf>,
    fullchain: Option<PathBuf>,
    key: Option<PathBuf>,
    combined: Option<PathBuf>,
    pkcs12: Option<Spanned<PathBuf>>,
    pkcs12_password_file: Option<Spanned<PathBuf>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    key_mode: Option<Spanned<String>>,
}

fn default_reload_timeout() -> u64 {
    60
}

fn default_verify_timeout() -> u64 {
    30
}

/// Signals a reload may send, by the names operators write.
const SIGNALS: [&str; 4] = ["HUP", "USR1", "USR2", "TERM"];

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (relative paths are taken from its directory).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let located = Locator { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            located.error(span, e.message().trim_end())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Validator {
            located,
            base,
            warnings: Vec::new(),
            has_dns01: false,
        }
        .config(raw)
    }

    pub fn certificate(&self, name: &str) -> Option<&CertificateConfig> {
        self.certificates.iter().find(|c| c.name == name)
    }

    /// The certificates called `names` (all of them when `names` is empty), or which name is
    /// not configured.
    pub fn selected(&self, names: &[String]) -> Result<Vec<CertificateConfig>, String> {
        if names.is_empty() {
            return Ok(self.certificates.clone());
        }
        names
            .iter()
            .map(|name| {
                self.certificate(name).cloned().ok_or_else(|| {
                    let known: Vec<&str> =
                        self.certificates.iter().map(|c| c.name.as_str()).collect();
                    format!(
                        "no certificate named \"{name}\" in {}; configured: {}",
                        self.path.display(),
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    )
                })
            })
            .collect()
    }
}

/// Turns byte offsets into `file:line:column` errors.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let before = self.text.get(..span.start).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

struct Validator<'a> {
    located: Locator<'a>,
    base: &'a Path,
    warnings: Vec<String>,
    has_dns01: bool,
}

impl Validator<'_> {
    fn config(mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let acme = self.acme(raw.acme)?;
        let daemon = self.daemon(raw.daemon)?;
        let dns01 = match raw.dns01 {
            Some(dns01) => Some(self.dns01(dns01)?),
            None => None,
        };
        self.has_dns01 = dns01.is_some();
        let cluster = match raw.cluster {
            Some(cluster) => Some(self.cluster(cluster)?),
            None => None,
        };
        let preflight = self.preflight(raw.preflight)?;
        let mut certificates: Vec<CertificateConfig> = Vec::new();
        for raw_cert in raw.certificate {
            let span = raw_cert.name.span();
            let cert = self.certificate(raw_cert)?;
            if certificates.iter().any(|c| c.name == cert.name) {
                return Err(self.located.error(
                    span,
                    format!(
                        "certificate.name: \"{}\" is used twice; give each [[certificate]] its own name",
                        cert.name
                    ),
                ));
            }
            certificates.push(cert);
        }
        let notify = raw
            .notify
            .into_iter()
            .map(|n| self.notify(n))
            .collect::<Result<_, _>>()?;
        Ok(Config {
            path: self.located.path.to_path_buf(),
            acme,
            daemon,
            certificates,
            notify,
            dns01,
            cluster,
            preflight,
            warnings: self.warnings,
        })
    }

    fn acme(&self, raw: RawAcme) -> Result<AcmeConfig, ConfigError> {
        let url = |value: Option<Spanned<String>>, key: &str, default: &str| {
            match value {
            None => Ok(default.to_string()),
            Some(v) if v.get_ref().starts_with("https://") => Ok(v.into_inner()),
            Some(v) => Err(self.located.error(
                v.span(),
                format!("acme.{key}: ACME directories are served over HTTPS; write a URL starting with https://"),
            )),
        }
        };
        let mut contact = Vec::new();
        for c in raw.contact {
            let value = c.get_ref().trim();
            let address = value.strip_prefix("mailto:").unwrap_or(value);
            if !address.contains('@') || address.contains(char::is_whitespace) {
                return Err(self.located.error(
                    c.span(),
                    "acme.contact: write an e-mail address such as \"ops@example.com\"",
                ));
            }
            contact.push(format!("mailto:{address}"));
        }
        let eab = self.eab(raw.eab, "acme.eab")?;
        let extra_root = match raw.extra_root {
            None => None,
            Some(p) => Some(self.existing_file(p, "acme.extra_root")?),
        };
        // `[[acme.ca]]`: CAs in order of preference, instead of `acme.directory`.
        let mut cas = Vec::new();
        for (index, ca) in raw.ca.into_iter().enumerate() {
            if index == 0
                && let Some(directory) = &raw.directory
            {
                return Err(self.located.error(
                    directory.span(),
                    "acme.directory: with [[acme.ca]] entries, write the preferred CA as the first [[acme.ca]] instead",
                ));
            }
            cas.push(CaConfig {
                directory: url(Some(ca.directory), "ca.directory", LETS_ENCRYPT)?,
                eab: self.eab(ca.eab, "acme.ca.eab")?,
                extra_root: match ca.extra_root {
                    None => extra_root.clone(),
                    Some(p) => Some(self.existing_file(p, "acme.ca.extra_root")?),
                },
            });
        }
        let primary = match cas.is_empty() {
            true => CaConfig {
                directory: url(raw.directory, "directory", LETS_ENCRYPT)?,
                eab,
                extra_root,
            },
            false => cas.remove(0),
        };
        Ok(AcmeConfig {
            directory: primary.directory,
            staging_directory: url(
                raw.staging_directory,
                "staging_directory",
                LETS_ENCRYPT_STAGING,
            )?,
            contact,
            eab: primary.eab,
            extra_root: primary.extra_root,
            fallbacks: cas,
            request_timeout: Duration::from_secs(raw.request_timeout_secs.max(1)),
            order_timeout: Duration::from_secs(raw.order_timeout_secs.max(1)),
            concurrency: match raw.concurrency {
                None => DEFAULT_CONCURRENCY,
                Some(n) if (1..=64).contains(n.get_ref()) => n.into_inner(),
                Some(n) => {
                    return Err(self.located.error(
                        n.span(),
                        "acme.concurrency: write a number of renewals at once from 1 to 64",
                    ));
                }
            },
            limits: raw.limits,
        })
    }

    fn eab(&self, raw: Option<RawEab>, key: &str) -> Result<Option<ExternalAccount>, ConfigError> {
        let Some(eab) = raw else { return Ok(None) };
        Ok(Some(ExternalAccount {
            key_id: eab.key_id,
            hmac_key_file: self
                .existing_file(eab.hmac_key_file, &format!("{key}.hmac_key_file"))?,
        }))
    }
    fn daemon(&self, raw: RawDaemon) -> Result<DaemonConfig, ConfigError> {
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
            public_ip,
        })
    }

    fn dns01(&self, raw: Spanned<RawDns01>) -> Result<Dns01Config, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let missing = |key: &str| {
            self.located.error(
                span.clone(),
                format!("dns01: provider \"{}\" needs {key}", raw.provider.get_ref()),
            )
        };
        let provider = match raw.provider.get_ref().as_str() {
            "rfc2136" => {
                let server = raw
                    .server
                    .as_ref()
                    .ok_or_else(|| missing("server = \"IP:PORT\""))?;
                let server = server.get_ref().parse::<SocketAddr>().map_err(|_| {
                    self.located.error(server.span(), "dns01.server: write the primary's address and port, such as \"192.0.2.53:53\"")
                })?;
                let zone = raw
                    .zone
                    .as_ref()
                    .ok_or_else(|| missing("zone = \"example.com\""))?;
                let zone = DomainName::parse(zone.get_ref())
                    .map_err(|e| self.located.error(zone.span(), format!("dns01.zone: {e}")))?
                    .to_string();
                let algorithm =
                    match raw.key_algorithm.as_ref().map(|a| a.get_ref().as_str()) {
                        None | Some("hmac-sha256") => TsigAlgorithm::HmacSha256,
                        Some("hmac-sha384") => TsigAlgorithm::HmacSha384,
                        Some("hmac-sha512") => TsigAlgorithm::HmacSha512,
                        Some(_) => {
                            return Err(self.located.error(
                            raw.key_algorithm.as_ref().map_or(span.clone(), |a| a.span()),
                            "dns01.key_algorithm: write hmac-sha256, hmac-sha384 or hmac-sha512",
                        ));
                        }
                    };
                let key_file = raw
                    .key_file
                    .clone()
                    .ok_or_else(|| missing("key_file (the TSIG secret)"))?;
                let key_span = key_file.span();
                let key_path = self.existing_file(key_file, "dns01.key_file")?;
                let (file_name, secret) = read_tsig_key(&key_path).map_err(|why| {
                    self.located.error(
                        key_span,
                        format!("dns01.key_file: {}: {why}", key_path.display()),
                    )
                })?;
                let key_name = raw
                    .key_name
                    .clone()
                    .or(file_name)
                    .ok_or_else(|| missing("key_name"))?;
                Dns01Provider::Rfc2136 {
                    server,
                    zone,
                    key_name,
                    algorithm,
                    secret,
                }
            }
            "exec" => {
                let command = raw
                    .command
                    .clone()
                    .ok_or_else(|| missing("command = \"/path/to/script\""))?;
                Dns01Provider::Exec {
                    command: self.existing_file(command, "dns01.command")?,
                }
            }
            _ => {
                return Err(self.located.error(
                    raw.provider.span(),
                    "dns01.provider: write \"rfc2136\" or \"exec\"",
                ));
            }
        };
        let check_servers = raw
            .check_servers
            .iter()
            .map(|s| {
                s.get_ref().parse::<SocketAddr>().map_err(|_| {
                    self.located.error(s.span(), "dns01.check_servers: write addresses with ports, such as \"192.0.2.53:53\"")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Dns01Config {
            provider,
            check_servers,
            propagation_timeout: Duration::from_secs(raw.propagation_timeout_secs.max(1)),
            ttl: raw.ttl,
        })
    }

    fn notify(&self, raw: Spanned<RawNotify>) -> Result<NotifyTarget, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let via = match (raw.exec, raw.webhook) {
            (Some(exec), None) if !exec.trim().is_empty() => NotifyVia::Exec(exec),
            (None, Some(url)) => {
                let ok =
                    url.get_ref().starts_with("https://") || url.get_ref().starts_with("http://");
                if !ok || url.get_ref().parse::<http::Uri>().is_err() {
                    return Err(self.located.error(
                        url.span(),
                        "notify.webhook: write an http:// or https:// URL",
                    ));
                }
                NotifyVia::Webhook(url.into_inner())
            }
            _ => {
                return Err(self.located.error(
                    span,
                    "each [[notify]] needs exactly one of exec = \"command\" or webhook = \"https://...\"",
                ));
            }
        };
        Ok(NotifyTarget {
            via,
            events: raw
                .events
                .unwrap_or_else(|| vec![NotifyEvent::Failure, NotifyEvent::Expiry]),
        })
    }

    fn certificate(&mut self, raw: RawCertificate) -> Result<CertificateConfig, ConfigError> {
        let name = raw.name.get_ref();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !name_ok {
            return Err(self.located.error(
                raw.name.span(),
                "certificate.name: use 1-64 letters, digits, '.', '-' or '_' (it names a directory)",
            ));
        }
        if raw.domains.get_ref().is_empty() {
            return Err(self.located.error(
                raw.domains.span(),
                "certificate.domains: list at least one name, e.g. domains = [\"media.example.com\"]",
            ));
        }
        let challenge = match raw.challenge.as_ref().map(|c| c.get_ref().as_str()) {
            None | Some("auto") => Challenge::Auto,
            Some("http-01") => Challenge::Http01,
            Some("dns-01") => Challenge::Dns01,
            Some(other) => {
                let span = raw.challenge.as_ref().map_or(0..0, |c| c.span());
                return Err(self.located.error(
                    span,
                    format!("certificate.challenge: \"{other}\" is not a challenge; write \"auto\", \"http-01\" or \"dns-01\""),
                ));
            }
        };
        if challenge == Challenge::Dns01 && !self.has_dns01 {
            let span = raw.challenge.as_ref().map_or(0..0, |c| c.span());
            return Err(self.located.error(
                span,
                "certificate.challenge: dns-01 needs a [dns01] section (provider rfc2136 or exec)",
            ));
        }
        let mut domains: Vec<DomainName> = Vec::new();
        for written in raw.domains.into_inner() {
            let domain = DomainName::parse(written.get_ref()).map_err(|e| {
                self.located
                    .error(written.span(), format!("certificate.domains: {e}"))
            })?;
            if domain.is_wildcard() && (!self.has_dns01 || challenge == Challenge::Http01) {
                return Err(self.located.error(
                    written.span(),
                    format!(
                        "certificate.domains: {domain} is a wildcard, which only the dns-01 challenge can \
                         prove; add a [dns01] section (and do not force challenge = \"http-01\"), or \
                         list each host name instead"
                    ),
                ));
            }
            if domain.as_str() != written.get_ref().trim().trim_end_matches('.') {
                self.warnings.push(format!(
                    "{}: certificate \"{name}\": \"{}\" is written as \"{domain}\" in certificates; \
                     use that spelling in the config too",
                    self.located.path.display(),
                    written.get_ref(),
                ));
            }
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        let verify = self.endpoints(raw.verify, &domains)?;
        let webroot = match raw.webroot {
            None => None,
            Some(dir) => {
                let span = dir.span();
                let dir = self.absolute(dir.into_inner());
                if !dir.is_dir() {
                    return Err(self.located.error(
                        span,
                        format!(
                            "certificate.webroot: {} is not a directory; write the document root of the \
                             server that answers port 80",
                            dir.display()
                        ),
                    ));
                }
                Some(dir)
            }
        };
        Ok(CertificateConfig {
            name: raw.name.into_inner(),
            domains,
            key_type: raw.key_type,
            reuse_key: raw.reuse_key,
            challenge,
            profile: match raw.profile {
                None => None,
                Some(p)
                    if !p.get_ref().is_empty()
                        && p.get_ref().chars().all(|c| c.is_ascii_graphic()) =>
                {
                    Some(p.into_inner())
                }
                Some(p) => {
                    return Err(self.located.error(
                        p.span(),
                        "certificate.profile: write a profile name the CA offers, such as \"shortlived\"",
                    ));
                }
            },
            webroot,
            output: self.output(raw.output)?,
            reload: self.reload(
                raw.reload,
                raw.reload_pidfile,
                raw.reload_signal,
                raw.reload_unit,
            )?,
            reload_timeout: Duration::from_secs(raw.reload_timeout_secs.max(1)),
            verify,
            verify_timeout: Duration::from_secs(raw.verify_timeout_secs.max(1)),
        })
    }

    fn reload(
        &self,
        command: Option<Spanned<String>>,
        pidfile: Option<Spanned<PathBuf>>,
        signal: Option<Spanned<String>>,
        unit: Option<Spanned<String>>,
    ) -> Result<Reload, ConfigError> {
        let command = command.filter(|c| !c.get_ref().trim().is_empty());
        let chosen = [
            command.as_ref().map(|c| c.span()),
            pidfile.as_ref().map(|p| p.span()),
            unit.as_ref().map(|u| u.span()),
        ];
        if let Some(second) = chosen.iter().flatten().nth(1) {
            return Err(self.located.error(
                second.clone(),
                "certificate: set only one of reload, reload_pidfile and reload_unit",
            ));
        }
        if let Some(signal) = &signal
            && (pidfile.is_none() || !SIGNALS.contains(&signal.get_ref().as_str()))
        {
            return Err(self.located.error(
                signal.span(),
                format!(
                    "certificate.reload_signal: write one of {} together with reload_pidfile",
                    SIGNALS.join(", ")
                ),
            ));
        }
        Ok(match (command, pidfile, unit) {
            (Some(command), _, _) => Reload::Command(command.into_inner()),
            (_, Some(pidfile), _) => Reload::Signal {
                pidfile: self.absolute(pidfile.into_inner()),
                signal: signal.map_or_else(|| "HUP".to_string(), Spanned::into_inner),
            },
            (_, _, Some(unit)) => {
                let ok = unit
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@._-:".contains(c));
                if !ok || unit.get_ref().is_empty() {
                    return Err(self.located.error(unit.span(), "certificate.reload_unit: write a systemd unit name such as \"nginx.service\""));
                }
                Reload::Unit(unit.into_inner())
            }
            _ => Reload::None,
        })
    }

    fn endpoints(
        &self,
        raw: Vec<RawEndpoint>,
        domains: &[DomainName],
    ) -> Result<Vec<Endpoint>, ConfigError> {
        raw.into_iter()
            .map(|e| {
                let address = e.endpoint.get_ref();
                let port_ok = address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
                if !port_ok {
                    return Err(self.located.error(
                        e.endpoint.span(),
                        "certificate.verify.endpoint: write host:port, such as \"127.0.0.1:443\" or \"[::1]:8443\"",
                    ));
                }
                let sni = match e.sni {
                    Some(sni) => DomainName::parse(sni.get_ref())
                        .map_err(|err| self.located.error(sni.span(), format!("certificate.verify.sni: {err}")))?,
                    None => domains[0].clone(),
                };
                Ok(Endpoint { address: e.endpoint.into_inner(), sni })
            })
            .collect()
    }

    fn output(&self, raw: RawOutput) -> Result<Output, ConfigError> {
        let link = raw.dir.map(|dir| self.absolute(dir));
        let mut files = Vec::new();
        let single = [
            (FileKind::Cert, raw.cert),
            (FileKind::Chain, raw.chain),
            (FileKind::Fullchain, raw.fullchain),
            (FileKind::Key, raw.key),
            (FileKind::Combined, raw.combined),
            (
                FileKind::Pkcs12,
                raw.pkcs12.as_ref().map(|p| p.get_ref().clone()),
            ),
        ];
        for (kind, path) in single {
            if let Some(path) = path {
                files.push((kind, self.absolute(path)));
            }
        }
        let owner = match raw.owner {
            None => None,
            Some(o) => Some(
                nix::unistd::User::from_name(o.get_ref())
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        self.located.error(
                            o.span(),
                            format!("certificate.output.owner: no user \"{}\" on this host; create it or write an existing user", o.get_ref()),
                        )
                    })?
                    .uid
                    .as_raw(),
            ),
        };
        let group = match raw.group {
            None => None,
            Some(g) => Some(
                nix::unistd::Group::from_name(g.get_ref())
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        self.located.error(
                            g.span(),
                            format!("certificate.output.group: no group \"{}\" on this host; create it or write an existing group", g.get_ref()),
                        )
                    })?
                    .gid
                    .as_raw(),
            ),
        };
        let key_mode = match raw.key_mode {
            None => 0o600,
            Some(m) => u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8)
                .ok()
                .filter(|mode| mode & 0o007 == 0 && *mode <= 0o777)
                .ok_or_else(|| {
                    self.located.error(
                        m.span(),
                        "certificate.output.key_mode: write an octal mode with no access for others, \
                         such as \"0600\" or \"0640\"",
                    )
                })?,
        };
        let pkcs12_password = match raw.pkcs12_password_file {
            None => None,
            Some(path) => {
                let span = path.span();
                let path = self.existing_file(path, "certificate.output.pkcs12_password_file")?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.located.error(
                        span.clone(),
                        format!(
                            "certificate.output.pkcs12_password_file: cannot read {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                let password = text.trim_end_matches(['\r', '\n']).to_string();
                if password.is_empty() {
                    return Err(self.located.error(span, "certificate.output.pkcs12_password_file: the file is empty; write the keystore password in it"));
                }
                Some(zeroize::Zeroizing::new(password))
            }
        };
        if let (None, Some(pkcs12)) = (&pkcs12_password, &raw.pkcs12) {
            return Err(self.located.error(
                pkcs12.span(),
                "certificate.output.pkcs12 needs pkcs12_password_file: a file holding the keystore password",
            ));
        }
        Ok(Output {
            link,
            files,
            pkcs12_password,
            owner,
            group,
            key_mode,
        })
    }

    fn existing_file(&self, path: Spanned<PathBuf>, key: &str) -> Result<PathBuf, ConfigError> {
        let span = path.span();
        let absolute = self.absolute(path.into_inner());
        if absolute.is_file() {
            Ok(absolute)
        } else {
            Err(self.located.error(
                span,
                format!(
                    "{key}: file {} does not exist; create it or correct the path",
                    absolute.display()
                ),
            ))
        }
    }

    /// Relative paths are read from the config file's directory, not the working directory,
    /// so that the daemon and one-off commands agree wherever they are started.
    fn absolute(&self, path: PathBuf) -> PathBuf {
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }
}

/// Reads a TSIG secret: either the base64 secret alone, or a BIND key file as `tsig-keygen`
/// writes it (`key "NAME" { algorithm ...; secret "BASE64"; };`), whose name is returned too.
fn read_tsig_key(path: &Path) -> Result<(Option<String>, zeroize::Zeroizing<Vec<u8>>), String> {
    use base64::Engine;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| e.to_string())?);
    let quoted_after = |keyword: &str| -> Option<String> {
        let rest = &text[text.find(keyword)? + keyword.len()..];
        let start = rest.find('"')? + 1;
        let end = start + rest[start..].find('"')?;
        Some(rest[start..end].to_string())
    };
    let (name, secret) = match quoted_after("secret") {
        Some(secret) => (
            quoted_after("key").map(|n| n.trim_end_matches('.').to_string() + "."),
            secret,
        ),
        None => (None, text.trim().to_string()),
    };
    let secret = zeroize::Zeroizing::new(secret);
    base64::engine::general_purpose::STANDARD
        .decode(secret.as_bytes())
        .map(|bytes| (name, zeroize::Zeroizing::new(bytes)))
        .map_err(|_| {
            "the secret is not base64; write the secret tsig-keygen printed, or its whole key file"
                .into()
        })
}

/// The first line of a secret file (a password, a shared token), which must not be empty.
pub fn read_secret_line(path: &Path) -> Result<zeroize::Zeroizing<String>, String> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| e.to_string())?);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err("its first line is empty: write the secret there".into());
    }
    Ok(zeroize::Zeroizing::new(line.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/certkeeper/test.toml"), text).map_err(|e| e.to_string())
    }

    const MINIMAL: &str = "[[certificate]]\nname = \"media\"\ndomains = [\"Media.Example.com\"]\n";

    #[test]
    fn defaults_and_normalization() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.acme.directory, LETS_ENCRYPT);
        assert_eq!(config.acme.staging_directory, LETS_ENCRYPT_STAGING);
        assert_eq!(config.daemon.listen.to_string(), "[::]:80");
        let cert = &config.certificates[0];
        assert_eq!(cert.domains[0].as_str(), "media.example.com");
        assert_eq!(cert.key_type, KeyType::EcdsaP256);
        assert_eq!(cert.output.key_mode, 0o600);
        for (written, key_type) in [
            ("rsa-2048", KeyType::Rsa2048),
            ("ecdsa-p384", KeyType::EcdsaP384),
        ] {
            let text = format!("{MINIMAL}key_type = \"{written}\"\n");
            assert_eq!(parse(&text).unwrap().certificates[0].key_type, key_type);
            assert_eq!(key_type.to_string(), written);
        }
        assert_eq!(config.warnings.len(), 1, "case change must warn");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse("[daemon]\nstate_dir = \"/x\"\nlisten_port = 80\n").unwrap_err();
        assert!(err.starts_with("/etc/certkeeper/test.toml:3:1:"), "{err}");
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn bad_values_say_what_to_write() {
        let err = parse(
            "[[certificate]]\nname = \"m\"\ndomains = [\"ok.example.com\", \"bad name.com\"]\n",
        )
        .unwrap_err();
        assert!(err.contains(":3:") && err.contains("bad name.com"), "{err}");
        let err = parse(
            "[[certificate]]\nname = \"m\"\ndomains = [\"a.example.com\"]\nkey_type = \"dsa\"\n",
        )
        .unwrap_err();
        assert!(err.contains(":4:") && err.contains("ecdsa-p256"), "{err}");
        let err = parse("[daemon]\nlisten = \"80\"\n").unwrap_err();
        assert!(err.contains("[::]:80"), "{err}");
        let err = parse(&format!(
            "{MINIMAL}[certificate.output]\nkey_mode = \"0644\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("key_mode"), "{err}");
    }

    #[test]
    fn reload_kinds_verify_and_pkcs12() {
        let config = parse(&format!(
            "{MINIMAL}reload_pidfile = \"/run/srs.pid\"\nverify = [{{ endpoint = \"127.0.0.1:443\" }}]\n"
        ))
        .unwrap();
        let cert = &config.certificates[0];
        assert_eq!(
            cert.reload,
            Reload::Signal {
                pidfile: "/run/srs.pid".into(),
                signal: "HUP".into()
            }
        );
        assert_eq!(
            cert.verify[0].sni.as_str(),
            "media.example.com",
            "SNI defaults to the first name"
        );
        let both = parse(&format!(
            "{MINIMAL}reload = \"x\"\nreload_unit = \"nginx.service\"\n"
        ))
        .unwrap_err();
        assert!(
            both.contains(":5:") && both.contains("only one of"),
            "{both}"
        );
        let signal = parse(&format!("{MINIMAL}reload_signal = \"HUP\"\n")).unwrap_err();
        assert!(signal.contains("together with reload_pidfile"), "{signal}");
        let endpoint = parse(&format!(
            "{MINIMAL}verify = [{{ endpoint = \"media.example.com\" }}]\n"
        ))
        .unwrap_err();
        assert!(endpoint.contains("host:port"), "{endpoint}");
        let p12 = parse(&format!(
            "{MINIMAL}[certificate.output]\npkcs12 = \"/x.p12\"\n"
        ))
        .unwrap_err();
        assert!(
            p12.contains(":5:") && p12.contains("pkcs12_password_file"),
            "{p12}"
        );
    }

    #[test]
    fn wildcard_without_dns01_is_refused() {
        let err =
            parse("[[certificate]]\nname = \"w\"\ndomains = [\"*.example.com\"]\n").unwrap_err();
        assert!(err.contains("wildcard") && err.contains("dns-01"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = parse("[acme]\nextra_root = \"/nonexistent/root.pem\"\n").unwrap_err();
        assert!(
            err.contains(":2:") && err.contains("/nonexistent/root.pem"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_and_relative_paths() {
        let err = parse(&format!("{MINIMAL}{MINIMAL}")).unwrap_err();
        assert!(err.contains("used twice"), "{err}");
        let config = parse("[daemon]\nstate_dir = \"state\"\n").unwrap();
        assert_eq!(config.daemon.state_dir, Path::new("/etc/certkeeper/state"));
    }
}
