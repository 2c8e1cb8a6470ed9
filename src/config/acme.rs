//! `[acme]`: the CA (and fallback CAs), the account, time limits, rate limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, Validator};

#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The preferred CA (the first `[[acme.ca]]`, or `acme.directory`).
    pub directory: String,
    pub staging_directory: String,
    pub contact: Vec<String>,
    pub eab: Option<ExternalAccount>,
    pub extra_root: Option<PathBuf>,
    /// The issuer whose chain to deploy when the CA offers several (`preferred_chain`).
    pub preferred_chain: Option<String>,
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
    pub preferred_chain: Option<String>,
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
                    preferred_chain: ca.preferred_chain.clone(),
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    directory: Option<Spanned<String>>,
    staging_directory: Option<Spanned<String>>,
    #[serde(default)]
    contact: Vec<Spanned<String>>,
    eab: Option<RawEab>,
    extra_root: Option<Spanned<PathBuf>>,
    preferred_chain: Option<Spanned<String>>,
    #[serde(default)]
    ca: Vec<RawCa>,
    #[serde(default = "default_request_timeout")]
    request_timeout_secs: u64,
    #[serde(default = "default_order_timeout")]
    order_timeout_secs: u64,
    concurrency: Option<Spanned<usize>>,
    limits: Option<RateLimits>,
}

pub(super) fn default_request_timeout() -> u64 {
    30
}

pub(super) fn default_order_timeout() -> u64 {
    120
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCa {
    directory: Spanned<String>,
    eab: Option<RawEab>,
    extra_root: Option<Spanned<PathBuf>>,
    preferred_chain: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEab {
    key_id: String,
    hmac_key_file: Spanned<PathBuf>,
}

impl Validator<'_> {
    pub(super) fn acme(&self, raw: RawAcme) -> Result<AcmeConfig, ConfigError> {
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
        let preferred_chain = self.issuer_name(raw.preferred_chain, "acme.preferred_chain")?;
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
                preferred_chain: match ca.preferred_chain {
                    None => preferred_chain.clone(),
                    some => self.issuer_name(some, "acme.ca.preferred_chain")?,
                },
            });
        }
        let primary = match cas.is_empty() {
            true => CaConfig {
                directory: url(raw.directory, "directory", LETS_ENCRYPT)?,
                eab,
                extra_root,
                preferred_chain,
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
            preferred_chain: primary.preferred_chain,
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

    /// An issuer's common name, such as "ISRG Root X1".
    fn issuer_name(
        &self,
        raw: Option<Spanned<String>>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        match raw {
            Some(name) if name.get_ref().trim().is_empty() => Err(self.located.error(
                name.span(),
                format!("{key}: write the common name of the issuer whose chain you want, such as \"ISRG Root X1\""),
            )),
            name => Ok(name.map(|n| n.into_inner().trim().to_string())),
        }
    }

    pub(super) fn eab(
        &self,
        raw: Option<RawEab>,
        key: &str,
    ) -> Result<Option<ExternalAccount>, ConfigError> {
        let Some(eab) = raw else { return Ok(None) };
        Ok(Some(ExternalAccount {
            key_id: eab.key_id,
            hmac_key_file: self.secret_file(eab.hmac_key_file, &format!("{key}.hmac_key_file"))?,
        }))
    }
}
