//! `[[certificate]]`: names, key, challenge, outputs, reload and the live check.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use nix::unistd::{Group, User};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, Validator};
use crate::names::DomainName;

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

/// A way of proving control of a name to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Http01,
    TlsAlpn01,
    Dns01,
    /// DNS-PERSIST-01 (draft-ietf-acme-dns-persist): one TXT record, set once by the operator
    /// (`certkeeper persist-record`), proves control for every later order.
    DnsPersist01,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Http01 => "http-01",
            Method::TlsAlpn01 => "tls-alpn-01",
            Method::Dns01 => "dns-01",
            Method::DnsPersist01 => "dns-persist-01",
        }
    }

    /// Whether the names are proven in DNS (so IP addresses cannot use it).
    pub fn in_dns(self) -> bool {
        matches!(self, Method::Dns01 | Method::DnsPersist01)
    }

    fn parse(text: &str) -> Option<Method> {
        [
            Method::Http01,
            Method::TlsAlpn01,
            Method::Dns01,
            Method::DnsPersist01,
        ]
        .into_iter()
        .find(|m| m.as_str() == text)
    }
}

/// Which challenges prove control of the names, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Challenge {
    /// The ladder: HTTP-01 when the pre-flight reaches port 80, else TLS-ALPN-01 when it
    /// reaches port 443, else DNS-01 (when configured), else DNS-PERSIST-01 when the
    /// operator's record would do; wildcards always DNS-01; an HTTP-01 validation that fails
    /// is retried with DNS-01.
    #[default]
    Auto,
    /// These methods, in this order (`challenge = "http-01"` is a ladder of one).
    Ladder([Option<Method>; 3]),
}

impl Challenge {
    pub fn only(method: Method) -> Challenge {
        Challenge::Ladder([Some(method), None, None])
    }

    /// The methods tried, in order, given whether a DNS-01 provider is configured.
    pub fn steps(&self, dns01: bool) -> Vec<Method> {
        match self {
            Challenge::Auto => [
                Method::Http01,
                Method::TlsAlpn01,
                Method::Dns01,
                Method::DnsPersist01,
            ]
            .into_iter()
            .filter(|m| dns01 || *m != Method::Dns01)
            .collect(),
            Challenge::Ladder(steps) => steps.iter().flatten().copied().collect(),
        }
    }

    /// Whether `method` may be used at all.
    pub fn allows(&self, method: Method) -> bool {
        self.steps(true).contains(&method)
    }

    /// Whether the config names `method` itself (with `auto`, the later steps are fallbacks
    /// that are looked at only when the ones before are ruled out).
    pub fn names(&self, method: Method) -> bool {
        matches!(self, Challenge::Ladder(_)) && self.allows(method)
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Challenge::Auto => f.write_str("auto"),
            Challenge::Ladder(_) => {
                let steps: Vec<&str> = self.steps(true).iter().map(|m| m.as_str()).collect();
                f.write_str(&steps.join(","))
            }
        }
    }
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
    /// How often the daemon looks again at what `verify` endpoints serve (zero: only after
    /// deploying).
    pub verify_every: Duration,
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
    /// `systemctl ACTION UNIT`: itself when root, else through the package's
    /// `certkeeper-reload@UNIT.path` trigger (`crate::deploy::reload::unit`).
    Unit {
        unit: String,
        action: UnitAction,
    },
}

/// What systemd is asked to do with a server's unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitAction {
    Reload,
    Restart,
    ReloadOrRestart,
    /// A signal to the unit's main process (`HUP`, `USR1`, `USR2`): coturn reloads its TLS
    /// files on SIGUSR2.
    Signal(String),
}

/// Whether `name` is a systemd unit name (letters, digits and `@._-:`), nothing a shell or
/// systemctl would read as an option or a path.
pub fn is_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-:".contains(c))
}

/// A live TLS endpoint to check after a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub address: String,
    /// The name sent in SNI.
    pub sni: DomainName,
}

/// The files of a certificate set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Cert,
    Chain,
    Fullchain,
    Key,
    Combined,
    /// Only when a PKCS#12 password is configured.
    Pkcs12,
}

impl FileKind {
    /// Every kind a version directory may hold.
    pub const ALL: [FileKind; 6] = [
        FileKind::Cert,
        FileKind::Chain,
        FileKind::Fullchain,
        FileKind::Key,
        FileKind::Combined,
        FileKind::Pkcs12,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            FileKind::Cert => "cert.pem",
            FileKind::Chain => "chain.pem",
            FileKind::Fullchain => "fullchain.pem",
            FileKind::Key => "privkey.pem",
            FileKind::Combined => "combined.pem",
            FileKind::Pkcs12 => "keystore.p12",
        }
    }

    pub fn holds_key(self) -> bool {
        matches!(self, FileKind::Key | FileKind::Combined | FileKind::Pkcs12)
    }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) name: Spanned<String>,
    domains: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    key_type: KeyType,
    #[serde(default)]
    reuse_key: bool,
    challenge: Option<Spanned<RawChallenge>>,
    webroot: Option<Spanned<PathBuf>>,
    profile: Option<Spanned<String>>,
    #[serde(default)]
    output: RawOutput,
    reload: Option<Spanned<String>>,
    reload_pidfile: Option<Spanned<PathBuf>>,
    reload_signal: Option<Spanned<String>>,
    reload_unit: Option<Spanned<String>>,
    /// With `reload_unit`: "reload" (default), "restart" or "reload-or-restart".
    reload_unit_action: Option<Spanned<String>>,
    #[serde(default = "default_reload_timeout")]
    reload_timeout_secs: u64,
    #[serde(default)]
    verify: Vec<RawEndpoint>,
    #[serde(default = "default_verify_timeout")]
    verify_timeout_secs: u64,
    #[serde(default = "default_verify_every")]
    verify_every_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    endpoint: Spanned<String>,
    sni: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
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

impl RawOutput {
    /// Whether no file and no directory is named: the certificate then lives in the state
    /// directory alone.
    fn names_nothing(&self) -> bool {
        [
            &self.dir,
            &self.cert,
            &self.chain,
            &self.fullchain,
            &self.key,
            &self.combined,
        ]
        .iter()
        .all(|p| p.is_none())
            && self.pkcs12.is_none()
    }
}

pub(super) fn default_reload_timeout() -> u64 {
    60
}

pub(super) fn default_verify_timeout() -> u64 {
    30
}

pub(super) fn default_verify_every() -> u64 {
    3600
}

/// Signals a reload may send, by the names operators write.
pub(super) const SIGNALS: [&str; 4] = ["HUP", "USR1", "USR2", "TERM"];

/// `challenge = "auto"`, `"http-01"`, … or a list such as `["tls-alpn-01", "dns-01"]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawChallenge {
    One(String),
    List(Vec<String>),
}

impl Validator<'_> {
    fn challenge(&self, raw: Option<&Spanned<RawChallenge>>) -> Result<Challenge, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Challenge::Auto);
        };
        let wrong = |what: &str| {
            self.located.error(
                raw.span(),
                format!(
                    "certificate.challenge: {what}; write \"auto\", one of \"http-01\", \"tls-alpn-01\", \
                     \"dns-01\", \"dns-persist-01\", or a list of them in the order to try, such as \
                     [\"tls-alpn-01\", \"dns-01\"]"
                ),
            )
        };
        let written: Vec<&str> = match raw.get_ref() {
            RawChallenge::One(one) if one == "auto" => return Ok(Challenge::Auto),
            RawChallenge::One(one) => vec![one.as_str()],
            RawChallenge::List(list) => list.iter().map(String::as_str).collect(),
        };
        let mut steps = [None; 3];
        for (index, text) in written.iter().enumerate() {
            let method = Method::parse(text)
                .ok_or_else(|| wrong(&format!("\"{text}\" is not a challenge")))?;
            if steps.contains(&Some(method)) {
                return Err(wrong(&format!("\"{text}\" is listed twice")));
            }
            *steps
                .get_mut(index)
                .ok_or_else(|| wrong("there are only three challenges"))? = Some(method);
        }
        if steps[0].is_none() {
            return Err(wrong("the list is empty"));
        }
        Ok(Challenge::Ladder(steps))
    }

    pub(super) fn certificate(
        &mut self,
        raw: RawCertificate,
    ) -> Result<CertificateConfig, ConfigError> {
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
        let challenge = self.challenge(raw.challenge.as_ref())?;
        if challenge.names(Method::Dns01) && !self.has_dns01 {
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
            let dns01 = self.has_dns01 && challenge.allows(Method::Dns01);
            if domain.is_wildcard() && !dns01 && !challenge.names(Method::DnsPersist01) {
                return Err(self.located.error(
                    written.span(),
                    format!(
                        "certificate.domains: {domain} is a wildcard, which only dns-01 or \
                         dns-persist-01 can prove; add a [dns01] section (and do not force \
                         challenge = \"http-01\"), set challenge = \"dns-persist-01\", or list \
                         each host name instead"
                    ),
                ));
            }
            if domain.ip().is_some() && challenge.steps(true).iter().all(|m| m.in_dns()) {
                return Err(self.located.error(
                    written.span(),
                    format!(
                        "certificate.domains: {domain} is an IP address, which only http-01 or tls-alpn-01 \
                         can prove (never dns-01, RFC 8738); allow one of them in certificate.challenge"
                    ),
                ));
            }
            if domain.ip().is_none()
                && domain.as_str() != written.get_ref().trim().trim_end_matches('.')
            {
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
        if raw.output.names_nothing() {
            let name = raw.name.get_ref();
            self.warnings.push(format!(
                "certificate \"{name}\" has no [certificate.output]: its files are only in \
                 STATE_DIR/certs/{name}/current/ (fullchain.pem, privkey.pem, …); point the \
                 server there, or name the paths it reads in [certificate.output]"
            ));
        }
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
                raw.reload_unit_action,
            )?,
            reload_timeout: Duration::from_secs(raw.reload_timeout_secs.max(1)),
            verify,
            verify_timeout: Duration::from_secs(raw.verify_timeout_secs.max(1)),
            verify_every: Duration::from_secs(raw.verify_every_secs),
        })
    }

    pub(super) fn reload(
        &self,
        command: Option<Spanned<String>>,
        pidfile: Option<Spanned<PathBuf>>,
        signal: Option<Spanned<String>>,
        unit: Option<Spanned<String>>,
        unit_action: Option<Spanned<String>>,
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
            && ((pidfile.is_none() && unit.is_none())
                || !SIGNALS.contains(&signal.get_ref().as_str()))
        {
            return Err(self.located.error(
                signal.span(),
                format!(
                    "certificate.reload_signal: write one of {} together with reload_pidfile or \
                     reload_unit",
                    SIGNALS.join(", ")
                ),
            ));
        }
        if let Some(action) = &unit_action
            && unit.is_none()
        {
            return Err(self.located.error(
                action.span(),
                "certificate.reload_unit_action: goes with reload_unit",
            ));
        }
        Ok(match (command, pidfile, unit) {
            (Some(command), _, _) => Reload::Command(command.into_inner()),
            (_, Some(pidfile), _) => Reload::Signal {
                pidfile: self.absolute(pidfile.into_inner()),
                signal: signal.map_or_else(|| "HUP".to_string(), Spanned::into_inner),
            },
            (_, _, Some(unit)) => {
                if !is_unit_name(unit.get_ref()) {
                    return Err(self.located.error(unit.span(), "certificate.reload_unit: write a systemd unit name such as \"nginx.service\""));
                }
                let action = match (signal, unit_action) {
                    (Some(signal), _) if signal.get_ref() == "TERM" => {
                        return Err(self.located.error(
                            signal.span(),
                            "certificate.reload_signal: TERM stops the server; with reload_unit write reload_unit_action = \"restart\" instead",
                        ));
                    }
                    (Some(signal), _) => UnitAction::Signal(signal.into_inner()),
                    (None, None) => UnitAction::Reload,
                    (None, Some(action)) => match action.get_ref().as_str() {
                        "reload" => UnitAction::Reload,
                        "restart" => UnitAction::Restart,
                        "reload-or-restart" => UnitAction::ReloadOrRestart,
                        _ => {
                            return Err(self.located.error(
                                action.span(),
                                "certificate.reload_unit_action: write \"reload\", \"restart\" or \"reload-or-restart\" (or set reload_signal for a signal)",
                            ));
                        }
                    },
                };
                Reload::Unit {
                    unit: unit.into_inner(),
                    action,
                }
            }
            _ => Reload::None,
        })
    }

    pub(super) fn endpoints(
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

    /// The uid or gid of `name` (`certificate.output.KEY`, a KIND of this host).
    fn system_id(
        &self,
        name: &Spanned<String>,
        key: &str,
        kind: &str,
        find: impl Fn(&str) -> Option<u32>,
    ) -> Result<u32, ConfigError> {
        find(name.get_ref()).ok_or_else(|| {
            self.located.error(
                name.span(),
                format!(
                    "certificate.output.{key}: no {kind} \"{}\" on this host; create it or write an existing {kind}",
                    name.get_ref()
                ),
            )
        })
    }

    pub(super) fn output(&self, raw: RawOutput) -> Result<Output, ConfigError> {
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
        let owner = raw
            .owner
            .map(|o| {
                self.system_id(&o, "owner", "user", |n| {
                    Some(User::from_name(n).ok()??.uid.as_raw())
                })
            })
            .transpose()?;
        let group = raw
            .group
            .map(|g| {
                self.system_id(&g, "group", "group", |n| {
                    Some(Group::from_name(n).ok()??.gid.as_raw())
                })
            })
            .transpose()?;
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
                let path = self.secret_file(path, "certificate.output.pkcs12_password_file")?;
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
}
