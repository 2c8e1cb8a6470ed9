//! ACME Renewal Information (RFC 9773): the renewal window the CA suggests for a certificate,
//! and the identifier that names it in `replaces`.

use std::time::{Duration, SystemTime};

use instant_acme::CertificateIdentifier;
use rustls_pki_types::CertificateDer;

use super::{AcmeClient, AcmeError, failed};

/// The CA's suggestion for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: SystemTime,
    pub end: SystemTime,
    /// When to ask again (the CA's `Retry-After`).
    pub retry_after: Duration,
    pub explanation: Option<String>,
}

/// The ARI identifier (`base64url(AKI).base64url(serial)`) of a leaf certificate.
pub fn certificate_id(
    leaf: &CertificateDer<'_>,
) -> Result<CertificateIdentifier<'static>, AcmeError> {
    CertificateIdentifier::try_from(leaf)
        .map(CertificateIdentifier::into_owned)
        .map_err(|reason| AcmeError::Ari(format!("cannot identify the certificate: {reason}")))
}

impl AcmeClient {
    /// The renewal window of `leaf`, or `None` when the CA offers no ARI.
    pub async fn renewal_window(
        &self,
        leaf: &CertificateDer<'_>,
    ) -> Result<Option<Window>, AcmeError> {
        let id = certificate_id(leaf)?;
        match self.account().renewal_info(&id).await {
            Ok((info, retry_after)) => Ok(Some(Window {
                start: info.suggested_window.start.into(),
                end: info.suggested_window.end.into(),
                retry_after,
                explanation: info.explanation_url,
            })),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(failed("fetch the renewal information (ARI)")(e)),
        }
    }
}
