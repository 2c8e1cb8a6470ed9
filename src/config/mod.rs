//! The TOML configuration: parsed once into typed, validated values.
//!
//! Parsing is strict (`deny_unknown_fields`), and every error names the file, line and key and
//! says what to write instead. Deeper code never re-checks strings: domains are [`DomainName`](crate::names::DomainName)s,
//! key types an enum, paths absolute. This module does no network I/O.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod acme;
mod certificate;
mod challenge;
mod cluster;
mod daemon;
mod dns01;
mod monitor;
mod notify;
mod output;
mod preflight;
mod reload;
mod toml_error;
pub use acme::{
    AcmeConfig, CaConfig, DEFAULT_CONCURRENCY, ExternalAccount, FAILOVER_AFTER, RateLimits,
};
pub use certificate::{CertificateConfig, KeyType};
pub use challenge::{Challenge, Method};
pub use cluster::ClusterConfig;
pub use daemon::{DaemonConfig, LogFormat};
pub use dns01::{Dns01Config, Dns01Provider, TsigAlgorithm};
pub use monitor::MonitorConfig;
pub use notify::{NotifyEvent, NotifyTarget, NotifyVia};
pub use output::{FileKind, Output};
pub use preflight::PreflightConfig;
pub use reload::{Endpoint, Reload, UnitAction, is_unit_name};

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
    /// Endpoints watched but not renewed.
    pub monitors: Vec<MonitorConfig>,
    /// Things that parse but deserve the operator's attention (names written in another case).
    pub warnings: Vec<String>,
}

// ---- what the file says, before it makes sense ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    acme: acme::RawAcme,
    #[serde(default)]
    daemon: daemon::RawDaemon,
    #[serde(default)]
    certificate: Vec<certificate::RawCertificate>,
    #[serde(default)]
    notify: Vec<Spanned<notify::RawNotify>>,
    dns01: Option<Spanned<dns01::RawDns01>>,
    cluster: Option<Spanned<cluster::RawCluster>>,
    #[serde(default)]
    preflight: preflight::RawPreflight,
    #[serde(default)]
    monitor: Vec<monitor::RawMonitor>,
}

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
            let message = toml_error::reword(e.message().trim_end(), text, &span);
            located.error(span, message)
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Validator {
            located,
            base,
            warnings: Vec::new(),
            exposed: Default::default(),
            has_dns01: false,
        }
        .config(raw)
    }

    pub fn certificate(&self, name: &str) -> Option<&CertificateConfig> {
        self.certificates.iter().find(|c| c.name == name)
    }

    /// The certificates called `names` (all of them when `names` is empty), or which name is
    /// not configured.
    pub fn selected(&self, names: &[String]) -> Result<Vec<CertificateConfig>, UnknownCertificate> {
        if names.is_empty() {
            return Ok(self.certificates.clone());
        }
        (names.iter())
            .map(|name| {
                self.certificate(name)
                    .cloned()
                    .ok_or_else(|| UnknownCertificate {
                        name: name.clone(),
                        path: self.path.clone(),
                        known: self.certificates.iter().map(|c| c.name.clone()).collect(),
                    })
            })
            .collect()
    }
}

/// A command named a certificate the config does not have.
#[derive(Debug, thiserror::Error)]
#[error(
    "no certificate named \"{name}\" in {}; configured: {}",
    path.display(),
    if known.is_empty() { "none".to_string() } else { known.join(", ") }
)]
pub struct UnknownCertificate {
    pub name: String,
    pub path: PathBuf,
    pub known: Vec<String>,
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
    /// Secret files others may read, found where only `&self` is at hand.
    exposed: std::cell::RefCell<Vec<String>>,
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
        for cert in &certificates {
            let lets_encrypt = acme.directory.contains("api.letsencrypt.org");
            if lets_encrypt
                && cert.domains.iter().any(|d| d.ip().is_some())
                && cert.profile.as_deref() != Some("shortlived")
            {
                self.warnings.push(format!(
                    "certificate \"{}\": Let's Encrypt issues IP-address certificates only with the \
                     short-lived profile; set profile = \"shortlived\" (about 6 days; certkeeper renews them in time)",
                    cert.name
                ));
            }
        }
        let monitors = raw
            .monitor
            .into_iter()
            .map(|m| self.monitor(m))
            .collect::<Result<_, _>>()?;
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
            monitors,
            warnings: [self.warnings, self.exposed.into_inner()].concat(),
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

    /// An existing file that holds a secret; a warning when users other than its owner may
    /// read it.
    fn secret_file(&self, path: Spanned<PathBuf>, key: &str) -> Result<PathBuf, ConfigError> {
        let path = self.existing_file(path, key)?;
        if let Some(warning) = exposed_secret(&path, key) {
            self.exposed.borrow_mut().push(warning);
        }
        Ok(path)
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

/// The control socket the config file at `path` names, read leniently (any key it does not
/// need may be wrong, or the file not TOML at all): how to reach the running daemon when the
/// file is broken. The rule is [`DaemonConfig`]'s.
pub fn control_socket_of(path: &Path) -> PathBuf {
    let base = path.parent().unwrap_or(Path::new("."));
    let daemon = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| table.get("daemon")?.as_table().cloned());
    let setting = |key: &str| {
        daemon
            .as_ref()
            .and_then(|d| d.get(key)?.as_str().map(|p| base.join(p)))
    };
    match (setting("control_socket"), setting("state_dir")) {
        (Some(socket), _) => socket,
        (None, Some(state)) if state != Path::new(DEFAULT_STATE_DIR) => state.join("control.sock"),
        _ => DEFAULT_CONTROL_SOCKET.into(),
    }
}

/// What to say when the secret file `path` (named by `key`) may be read by its group or by
/// others; `None` when only its owner may.
pub fn exposed_secret(path: &Path, key: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then(|| {
        format!(
            "{key}: {} holds a secret but its group or other users may read it (mode {mode:04o}); \
             chmod 600 {}",
            path.display(),
            path.display()
        )
    })
}

/// Why a secret file gave no secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error("its first line is empty: write the secret there")]
    Empty,
    #[error(
        "holds {0} bytes; write at least {min} random ones, the same file on every node (for \
         instance: head -c 48 /dev/urandom | base64 > FILE)",
        min = cluster::SECRET_MIN_BYTES
    )]
    TooShort(usize),
    #[error(
        "the secret is not base64; write the secret tsig-keygen printed, or its whole key file"
    )]
    NotBase64,
}

/// The first line of a secret file (a password, a shared token), which must not be empty.
pub fn read_secret_line(path: &Path) -> Result<zeroize::Zeroizing<String>, SecretError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(SecretError::Empty);
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
        let said = config.warnings.join("\n");
        assert!(
            said.contains("is written as \"media.example.com\""),
            "case change must warn: {said}"
        );
        assert!(said.contains("has no [certificate.output]"), "{said}");
        let with_output = parse(&format!(
            "{MINIMAL}[certificate.output]\ndir = \"/srv/tls\"\n"
        ));
        let warnings = with_output.unwrap().warnings.join("\n");
        assert!(
            !warnings.contains("has no [certificate.output]"),
            "{warnings}"
        );
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
    fn preferred_chain_is_each_cas_own_or_the_acme_one() {
        let config = parse(&format!(
            "[acme]\npreferred_chain = \" ISRG Root X1 \"\n\
             [[acme.ca]]\ndirectory = \"https://one.example/dir\"\n\
             [[acme.ca]]\ndirectory = \"https://two.example/dir\"\npreferred_chain = \"Other Root\"\n\
             [[acme.ca]]\ndirectory = \"https://three.example/dir\"\n{MINIMAL}"
        ))
        .unwrap();
        let chains: Vec<Option<String>> = (0..3)
            .map(|n| config.acme.ca_for(n * FAILOVER_AFTER).preferred_chain)
            .collect();
        assert_eq!(
            chains,
            [
                Some("ISRG Root X1".to_string()),
                Some("Other Root".to_string()),
                Some("ISRG Root X1".to_string()),
            ]
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
