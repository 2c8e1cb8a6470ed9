//! Everything certkeeper says to an ACME CA, over instant-acme: the account (created once,
//! stored 0600, reused) and the order flow (authorize over HTTP-01, finalize, download).
//!
//! Every call into instant-acme stays inside this module, so a rename in its API touches
//! nothing else. It does not know where certificates are written.

mod account;
mod http;
mod order;

use std::path::PathBuf;

pub use account::AcmeClient;

/// A failure talking to the CA, with what the operator should do about it.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("cannot use acme.extra_root {path}: {reason}")]
    ExtraRoot { path: PathBuf, reason: String },
    #[error("cannot set up TLS for the ACME client: {0}")]
    Tls(String),
    #[error("cannot read the ACME account file {path}: {reason}; move it away to create a new account")]
    AccountFile { path: PathBuf, reason: String },
    #[error("cannot read acme.eab.hmac_key_file {path}: {reason}")]
    EabKey { path: PathBuf, reason: String },
    #[error("cannot reach the ACME directory {directory}: {source}; check the URL, DNS and outbound HTTPS")]
    Directory {
        directory: String,
        source: instant_acme::Error,
    },
    #[error("the CA refused to {step}: {source}")]
    Refused {
        step: &'static str,
        source: instant_acme::Error,
    },
    #[error("the CA could not validate {name} over http-01: {detail}; check that port 80 of {name} reaches certkeeper")]
    Validation { name: String, detail: String },
    #[error("the CA offers no http-01 challenge for {0}")]
    NoHttp01(String),
    #[error("the CA's authorization for {name} is {status}; a new order will start afresh")]
    Authorization { name: String, status: String },
    #[error("the CA did not finish the order in time ({step}); it will be retried")]
    Timeout { step: &'static str },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl AcmeError {
    /// Whether trying the same thing again soon may succeed (network, CA overload, bad nonce),
    /// as opposed to something the operator must fix first.
    pub fn is_transient(&self) -> bool {
        match self {
            AcmeError::Directory { .. } | AcmeError::Timeout { .. } => true,
            AcmeError::Refused { source, .. } => is_transient(source),
            _ => false,
        }
    }
}

fn is_transient(error: &instant_acme::Error) -> bool {
    match error {
        instant_acme::Error::Api(problem) => matches!(
            problem.r#type.as_deref(),
            Some(
                "urn:ietf:params:acme:error:badNonce"
                    | "urn:ietf:params:acme:error:serverInternal"
                    | "urn:ietf:params:acme:error:rateLimited"
            )
        ),
        instant_acme::Error::Timeout(_)
        | instant_acme::Error::Hyper(_)
        | instant_acme::Error::Other(_) => true,
        _ => false,
    }
}
