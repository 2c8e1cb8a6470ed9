//! Revocation (RFC 8555 §7.6), signed by the account key.

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::{AcmeClient, AcmeError, failed};

/// Why a certificate is revoked (the RFC 5280 reasons an ACME CA accepts from a subscriber).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
#[value(rename_all = "camelCase")]
pub enum RevokeReason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Unspecified => "unspecified",
            RevokeReason::KeyCompromise => "keyCompromise",
            RevokeReason::AffiliationChanged => "affiliationChanged",
            RevokeReason::Superseded => "superseded",
            RevokeReason::CessationOfOperation => "cessationOfOperation",
        }
    }
}

impl AcmeClient {
    /// Asks the CA to revoke the certificate `leaf` for `reason`.
    pub async fn revoke(
        &self,
        leaf: &CertificateDer<'_>,
        reason: RevokeReason,
    ) -> Result<(), AcmeError> {
        use instant_acme::RevocationReason as Reason;
        let reason = match reason {
            RevokeReason::Unspecified => Reason::Unspecified,
            RevokeReason::KeyCompromise => Reason::KeyCompromise,
            RevokeReason::AffiliationChanged => Reason::AffiliationChanged,
            RevokeReason::Superseded => Reason::Superseded,
            RevokeReason::CessationOfOperation => Reason::CessationOfOperation,
        };
        let request = instant_acme::RevocationRequest {
            certificate: leaf,
            reason: Some(reason),
        };
        self.account()
            .revoke(&request)
            .await
            .map_err(failed("revoke the certificate"))
    }
}
