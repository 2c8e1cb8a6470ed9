//! One renewal of one certificate: key, CSR, order, checks, then the atomic swap and reload.
//!
//! Split in two on purpose: [`obtain`] only talks to the CA and may be abandoned at any await
//! (on SIGTERM); [`crate::deploy::deploy`] changes files and runs the reload, and is always let
//! finish.

use std::time::SystemTime;

use crate::acme::{AcmeClient, AcmeError};
use crate::bundle::{Bundle, BundleError, LeafInfo};
use crate::challenge::http01::Tokens;
use crate::config::CertificateConfig;
use crate::deploy::DeployError;
use crate::keys::{self, KeyError};
use crate::state::CertState;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Acme(#[from] AcmeError),
    #[error("refused to deploy the new certificate, the previous one stays in place: {0}")]
    Refused(#[from] BundleError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// A certificate obtained and checked, not yet deployed.
pub struct Obtained {
    pub bundle: Bundle,
    pub leaf: LeafInfo,
}

/// Orders a certificate for `cert` and checks it against every pre-deployment rule.
pub async fn obtain(
    acme: &mut AcmeClient,
    tokens: &Tokens,
    store: &Store,
    cert: &CertificateConfig,
) -> Result<Obtained, RenewError> {
    let key = match cert.reuse_key {
        true => match store.current_key_pem(&cert.name) {
            Ok(pem) => keys::from_pem(&pem)?,
            Err(_) => generate(cert).await?,
        },
        false => generate(cert).await?,
    };
    let csr = keys::csr(&key, &cert.domains)?;
    let chain = acme.issue(&cert.domains, &csr, tokens).await?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let bundle = Bundle::from_pem(&chain, &key_pem)?;
    let leaf = bundle.check(&cert.domains, SystemTime::now())?;
    Ok(Obtained { bundle, leaf })
}

/// RSA key generation takes long enough to stall the runtime: run it off the async threads.
async fn generate(cert: &CertificateConfig) -> Result<rcgen::KeyPair, KeyError> {
    let key_type = cert.key_type;
    tokio::task::spawn_blocking(move || keys::generate(key_type))
        .await
        .map_err(|e| KeyError::Generate(key_type, e.to_string()))?
}

/// Records the outcome of an attempt in the certificate's state file.
///
/// A failed reload is not a failed issuance: the new certificate is in place, and ordering it
/// again would only burn the CA's duplicate-certificate limit. It is recorded as a warning.
pub fn record(
    store: &Store,
    name: &str,
    result: Result<(), &RenewError>,
) -> Result<(), StoreError> {
    let mut state = CertState::load(store, name);
    let now = SystemTime::now();
    match result {
        Ok(()) => state.record_success(now),
        Err(RenewError::Deploy(DeployError::Reload(reload))) => {
            state.record_success_with_warning(now, reload.to_string())
        }
        Err(e) => state.record_failure(now, e.to_string()),
    }
    state.save(store, name).inspect_err(|e| {
        tracing::error!(name, error = %e, "could not save the certificate's state");
    })
}
