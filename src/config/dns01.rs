//! `[dns01]`: the DNS-01 provider (RFC 2136 with TSIG, or an exec hook).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};
use crate::names::DomainName;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns01 {
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

pub(super) fn default_propagation_timeout() -> u64 {
    120
}

pub(super) fn default_dns_ttl() -> u32 {
    60
}

/// Reads a TSIG secret: either the base64 secret alone, or a BIND key file as `tsig-keygen`
/// writes it (`key "NAME" { algorithm ...; secret "BASE64"; };`), whose name is returned too.
pub(super) fn read_tsig_key(
    path: &Path,
) -> Result<(Option<String>, zeroize::Zeroizing<Vec<u8>>), super::SecretError> {
    use base64::Engine;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
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
        .map_err(|_| super::SecretError::NotBase64)
}

impl Validator<'_> {
    pub(super) fn dns01(&self, raw: Spanned<RawDns01>) -> Result<Dns01Config, ConfigError> {
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
                let key_path = self.secret_file(key_file, "dns01.key_file")?;
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
}
