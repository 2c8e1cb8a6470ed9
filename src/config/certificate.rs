//! `[[certificate]]`: its names and key, and the parts read by their own modules
//! (`challenge`, `output`, `reload`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::challenge::{Challenge, Method, RawChallenge};
use super::output::{Output, RawOutput};
use super::reload::{
    Endpoint, RawEndpoint, Reload, default_reload_timeout, default_verify_every,
    default_verify_timeout,
};
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

impl Validator<'_> {
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
}
