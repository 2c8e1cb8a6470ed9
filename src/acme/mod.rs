//! Everything certkeeper says to an ACME CA, over instant-acme: the account (created once,
//! stored 0600, reused) and the order flow (authorize over HTTP-01, finalize, download).
//!
//! Every call into instant-acme stays inside this module, so a rename in its API touches
//! nothing else. It does not know where certificates are written.

pub(crate) mod keys;

mod account;
mod answers;
pub(crate) mod ari;
mod chains;
mod clock;
mod http;
mod order;
mod persist;
mod revoke;

use std::path::PathBuf;

pub use account::{Accounts, AcmeClient, account_path};
pub use answers::read_ca_answer;
pub use clock::{clock_blocks_orders, clock_offset};
pub use order::Solvers;
pub use persist::{PersistIdentity, PersistProblem, PersistRecord, judge as judge_persist_record};
pub use revoke::{KeyPem, RevokeReason, revoke_with_certificate_key};

use crate::challenge::choice::Method;
use crate::net::web::chain;

fn validation_hint(method: Method, name: &str) -> String {
    match method {
        Method::Http01 => {
            format!("check that port 80 of {name} reaches certkeeper (certkeeper check)")
        }
        Method::TlsAlpn01 => format!(
            "check that port 443 of {name} reaches certkeeper's tls-alpn-01 responder (certkeeper check)"
        ),
        Method::Dns01 => format!(
            "check that the CA's resolvers see _acme-challenge.{} in public DNS",
            name.trim_start_matches("*.")
        ),
        Method::DnsPersist01 => format!(
            "check that the CA's resolvers see the record `certkeeper persist-record` prints for {name} \
             (_validation-persist.{})",
            name.trim_start_matches("*.")
        ),
    }
}

/// Why the roots of `acme.extra_root` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ExtraRootError {
    #[error(transparent)]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error(transparent)]
    Rejected(#[from] rustls::Error),
    #[error("it holds no PEM certificate")]
    Empty,
}

/// Why the account file cannot be read (or set aside).
#[derive(Debug, thiserror::Error)]
pub enum AccountFileError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Why the EAB key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EabKeyError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not base64url text")]
    NotBase64Url,
}

/// A failure talking to the CA, with what the operator should do about it.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("cannot use acme.extra_root {path}: {source}")]
    ExtraRoot {
        path: PathBuf,
        source: ExtraRootError,
    },
    #[error("cannot set up TLS for the ACME client: {0}")]
    Tls(#[source] rustls::Error),
    #[error("cannot tell the dns-persist-01 record for the CA at {directory}: {source}")]
    PersistDirectory {
        directory: String,
        source: http::GetError,
    },
    #[error(
        "cannot tell the dns-persist-01 record for the CA at {directory}: its directory names \
         no caaIdentities, so no dns-persist-01 record can name it"
    )]
    PersistNoIssuer { directory: String },
    #[error(
        "cannot read the ACME account file {path}: {source}; move it away to create a new account"
    )]
    AccountFile {
        path: PathBuf,
        source: AccountFileError,
    },
    #[error("cannot read acme.eab.hmac_key_file {path}: {source}")]
    EabKey { path: PathBuf, source: EabKeyError },
    #[error(
        "the CA refused to create the ACME account with the EAB key id {key_id}: {}; check \
         [acme.eab] key_id and the key file. Some CAs' EAB keys (Google Trust Services) work \
         once and expire after 7 days: if this one was used before or is older, mint a new one",
        chain(source)
    )]
    EabRefused {
        key_id: String,
        source: instant_acme::Error,
    },
    #[error(
        "cannot reach the ACME directory {directory}: {}; check the URL, DNS and outbound HTTPS",
        chain(source)
    )]
    Directory {
        directory: String,
        source: instant_acme::Error,
    },
    #[error("the CA refused to {step}: {}{}", chain(source), problem_hint(source))]
    Refused {
        step: &'static str,
        source: instant_acme::Error,
        /// The `Retry-After` header that came with the refusal, if any.
        retry_after: Option<std::time::SystemTime>,
    },
    #[error(
        "the CA's HTTPS certificate is not trusted while trying to {step}: {}; for a test CA \
         such as pebble, set acme.extra_root to the root that signed its HTTPS certificate",
        chain(source)
    )]
    Untrusted {
        step: &'static str,
        source: instant_acme::Error,
    },
    #[error(
        "the CA's answer could not be read while trying to {step}: {}; it will be retried",
        chain(source)
    )]
    Malformed {
        step: &'static str,
        source: instant_acme::Error,
    },
    #[error(
        "no answer from the CA while trying to {step}: {}; check outbound HTTPS and DNS",
        chain(source)
    )]
    Unreachable {
        step: &'static str,
        source: instant_acme::Error,
    },
    #[error("the CA does not offer what is needed to {step}: {source}")]
    Unsupported {
        step: &'static str,
        source: instant_acme::Error,
    },
    #[error(
        "the CA could not validate {name} over {}: {detail}; {}",
        method.as_str(),
        validation_hint(*method, name)
    )]
    Validation {
        name: String,
        method: Method,
        detail: String,
    },
    #[error("the CA offers no {method} challenge for {name}")]
    NoChallenge { name: String, method: &'static str },
    #[error("{0} needs dns-01, but no [dns01] provider is configured")]
    NoDns01Provider(String),
    #[error(transparent)]
    TlsAlpn01(#[from] crate::challenge::tls_alpn01::TlsAlpnError),
    #[error(transparent)]
    Dns01(#[from] crate::challenge::dns01::Dns01Error),
    #[error("the CA's authorization for {name} is {status}; a new order will start afresh")]
    Authorization { name: String, status: String },
    #[error("the CA did not finish the order in time ({step}); it will be retried")]
    Timeout { step: &'static str },
    #[error("cannot publish the http-01 answer: {0}")]
    Publish(#[from] crate::challenge::http01::PublishError),
    #[error(transparent)]
    Store(#[from] crate::deploy::store::StoreError),
    #[error(
        "the CA does not offer the certificate profile \"{profile}\" (it offers: {offered}); change certificate.profile"
    )]
    Profile { profile: String, offered: String },
    #[error("cannot revoke the certificate with its own key: {0}")]
    Revoke(#[from] revoke::RevokeError),
    #[error("renewal information (ARI): {0}")]
    Ari(String),
    #[error("cannot read the CA's clock from {directory}: {source}")]
    Clock {
        directory: String,
        source: http::GetError,
    },
    #[error(
        "this host's clock is {seconds}s behind the CA's: a certificate issued now would not be \
         valid on this host yet and could not be deployed, so none was ordered (the CA's limits \
         are spent on nothing); fix the time (timedatectl set-ntp true)"
    )]
    ClockBehind { seconds: i64 },
}

/// What the operator should do about a CA's problem document, for the kinds that retrying
/// will not cure (and for rate limits, which it will, later).
fn problem_hint(error: &instant_acme::Error) -> &'static str {
    let instant_acme::Error::Api(problem) = error else {
        return "";
    };
    match problem
        .r#type
        .as_deref()
        .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
    {
        Some("rejectedIdentifier") => {
            "; the CA will not issue for this name (its policy): remove it from certificate.domains or use another CA"
        }
        Some("caa") => {
            "; a CAA record of the domain forbids this CA: add the CA to the CAA records"
        }
        Some("unauthorized") => {
            "; the CA does not authorize this: for an account, check the EAB key id and key; for a name, its validation"
        }
        Some("rateLimited") => {
            "; rate limited: certkeeper waits until the time the CA gives before it tries again"
        }
        Some("externalAccountRequired") => {
            "; this CA needs External Account Binding: set [acme.eab]"
        }
        _ => "",
    }
}

/// The longest wait a rate-limited CA is taken at its word for: Let's Encrypt's longest
/// window is 7 days, and a CA that says "a year" must not let a certificate expire.
const LONGEST_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(7 * 86400);

/// When a rate-limited CA says to come back: its `Retry-After` header (RFC 8555 §6.6), else
/// the time in its words ("retry after 2026-11-24 10:00:00 UTC" in Let's Encrypt's problem
/// detail), at most a week ahead.
pub fn retry_after(error: &AcmeError) -> Option<std::time::SystemTime> {
    let AcmeError::Refused {
        source: instant_acme::Error::Api(problem),
        retry_after,
        ..
    } = error
    else {
        return None;
    };
    if problem.r#type.as_deref() != Some("urn:ietf:params:acme:error:rateLimited") {
        return None;
    }
    let said = retry_after.or_else(|| parse_retry_after(problem.detail.as_deref()?))?;
    Some(said.min(std::time::SystemTime::now() + LONGEST_RETRY_AFTER))
}

fn parse_retry_after(detail: &str) -> Option<std::time::SystemTime> {
    let at = &detail[detail.find("retry after ")? + "retry after ".len()..];
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    let parsed = time::PrimitiveDateTime::parse(at.get(..23)?, &format).ok()?;
    Some(parsed.assume_utc().into())
}

/// Sorts a failed call: the CA said no (a problem document), or we never got an answer.
pub(crate) fn failed(step: &'static str) -> impl Fn(instant_acme::Error) -> AcmeError {
    move |source| match source {
        instant_acme::Error::Api(_) => AcmeError::Refused {
            step,
            source,
            retry_after: None,
        },
        instant_acme::Error::Timeout(_) => AcmeError::Timeout { step },
        instant_acme::Error::Json(_) => AcmeError::Malformed { step, source },
        instant_acme::Error::Unsupported(_) => AcmeError::Unsupported { step, source },
        source if chain(&source).contains("invalid peer certificate") => {
            AcmeError::Untrusted { step, source }
        }
        source => AcmeError::Unreachable { step, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_the_ca_lacks_is_not_called_unreachable() {
        let lacking = instant_acme::Error::Unsupported("ACME renewal information (ARI)");
        let said = failed("create the order")(lacking).to_string();
        assert_eq!(
            said,
            "the CA does not offer what is needed to create the order: ACME server does not \
             support: ACME renewal information (ARI)"
        );
    }

    #[test]
    fn reads_lets_encrypts_retry_after() {
        let detail = "too many certificates (5) already issued for this exact set of identifiers in the last \
                      168h0m0s, retry after 2026-11-24 10:00:00 UTC: see https://letsencrypt.org/docs/rate-limits/";
        let at = parse_retry_after(detail).unwrap();
        assert_eq!(crate::timefmt::utc(at), "2026-11-24 10:00:00 UTC");
        assert!(parse_retry_after("slow down").is_none());
    }
}
