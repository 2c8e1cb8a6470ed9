//! Revocation (RFC 8555 §7.6), signed by the account key.

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::http::GetError;
use super::{AcmeClient, AcmeError, failed};

/// A private key in PEM, as `revoke --key` sends it: never printed, wiped when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyPem(pub String);

impl std::fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPem(<redacted>)")
    }
}

impl Drop for KeyPem {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

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

/// Revokes `leaf` with a request signed by the certificate's own key (RFC 8555 §7.6, the JWS
/// carries the key as a `jwk`): for when the account key is lost, or the certificate was
/// issued to another account. instant-acme signs only with an account key, so this one request
/// is built here: ES256/ES384 for ECDSA keys, RS256 for RSA keys.
pub async fn revoke_with_certificate_key(
    acme: &crate::config::AcmeConfig,
    directory: &str,
    leaf: &CertificateDer<'_>,
    key_pem: &str,
    reason: RevokeReason,
) -> Result<(), AcmeError> {
    let signer = jws::Signer::from_pem(key_pem).map_err(RevokeError::Key)?;
    let http = super::http::AcmeHttp::new(acme.extra_root.as_deref(), acme.request_timeout)?;
    let urls = http
        .get_json(directory)
        .await
        .map_err(RevokeError::Directory)?;
    let (Some(new_nonce), Some(revoke_url)) =
        (urls["newNonce"].as_str(), urls["revokeCert"].as_str())
    else {
        return Err(RevokeError::NoEndpoints.into());
    };
    let payload = serde_json::json!({
        "certificate": jws::base64url(leaf),
        "reason": reason as u8,
    });
    let empty = instant_acme::BodyWrapper::default;
    // A CA may reject a nonce now and then: ask again, twice.
    let mut refusal = None;
    for _ in 0..3 {
        let head = http::Request::head(new_nonce).body(empty());
        let head = head.map_err(|e| RevokeError::Nonce(GetError::Request(e)))?;
        let (parts, _) = http.send(head).await.map_err(RevokeError::Nonce)?;
        let nonce = (parts.headers.get("replay-nonce"))
            .and_then(|v| v.to_str().ok())
            .ok_or(RevokeError::NoNonce)?;
        let body = (signer.sign(&payload, nonce, revoke_url)).map_err(RevokeError::Sign)?;
        let request = http::Request::post(revoke_url)
            .header(http::header::CONTENT_TYPE, "application/jose+json")
            .body(instant_acme::BodyWrapper::from(body))
            .map_err(|e| RevokeError::Request(GetError::Request(e)))?;
        let (parts, body) = http.send(request).await.map_err(RevokeError::Request)?;
        if parts.status.is_success() {
            return Ok(());
        }
        let refused = Refusal::of(parts.status, &body);
        let bad_nonce = refused
            .kind
            .as_deref()
            .is_some_and(|k| k.ends_with("badNonce"));
        refusal = Some(refused);
        if !bad_nonce {
            break;
        }
    }
    Err(RevokeError::Refused(refusal.unwrap_or_default()).into())
}

/// Why a revocation signed with the certificate's own key did not go through.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error(transparent)]
    Key(jws::KeyError),
    #[error("the directory: {0}")]
    Directory(#[source] GetError),
    #[error("the directory: no newNonce or revokeCert")]
    NoEndpoints,
    #[error("a nonce: {0}")]
    Nonce(#[source] GetError),
    #[error("a nonce: no Replay-Nonce header")]
    NoNonce,
    #[error("cannot sign the request: {0}")]
    Sign(ring::error::Unspecified),
    #[error("the request: {0}")]
    Request(#[source] GetError),
    #[error("the CA refused: {0}")]
    Refused(Refusal),
}

/// The CA's refusal: its problem document (RFC 7807) in its own words, else the status and
/// the body.
#[derive(Debug, Default)]
pub struct Refusal {
    kind: Option<String>,
    detail: String,
}

impl Refusal {
    fn of(status: http::StatusCode, body: &[u8]) -> Refusal {
        let problem: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        match (problem["type"].as_str(), problem["detail"].as_str()) {
            (Some(kind), Some(detail)) => Refusal {
                kind: Some(kind.to_string()),
                detail: detail.to_string(),
            },
            _ => Refusal {
                kind: None,
                detail: format!(
                    "HTTP {}: {}",
                    status.as_u16(),
                    String::from_utf8_lossy(body)
                ),
            },
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Some(kind) => write!(f, "{} ({kind})", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

/// The one JWS certkeeper signs itself.
mod jws {
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};

    pub fn base64url(bytes: impl AsRef<[u8]>) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A key certkeeper cannot sign with.
    #[derive(Debug, thiserror::Error)]
    pub enum KeyError {
        #[error("not a PKCS#8 private key: {0}")]
        NotPkcs8(#[source] rustls_pki_types::pem::Error),
        #[error("an unsupported key: {0}")]
        Unsupported(ring::error::KeyRejected),
    }

    pub enum Signer {
        Ecdsa(EcdsaKeyPair, &'static str, &'static str),
        Rsa(RsaKeyPair),
    }

    impl Signer {
        /// The key of a PKCS#8 PEM (as certkeeper writes `privkey.pem`).
        pub fn from_pem(pem: &str) -> Result<Signer, KeyError> {
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
                .map_err(KeyError::NotPkcs8)?;
            let rng = SystemRandom::new();
            let der = der.secret_pkcs8_der();
            if let Ok(key) =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            {
                return Ok(Signer::Ecdsa(key, "ES256", "P-256"));
            }
            if let Ok(key) =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der, &rng)
            {
                return Ok(Signer::Ecdsa(key, "ES384", "P-384"));
            }
            RsaKeyPair::from_pkcs8(der)
                .map(Signer::Rsa)
                .map_err(KeyError::Unsupported)
        }

        fn protected(&self, nonce: &str, url: &str) -> serde_json::Value {
            let (alg, jwk) = match self {
                Signer::Ecdsa(key, alg, crv) => {
                    // An uncompressed point: 0x04, then x and y of equal length.
                    let point = &key.public_key().as_ref()[1..];
                    let (x, y) = point.split_at(point.len() / 2);
                    let jwk = serde_json::json!({ "crv": crv, "kty": "EC", "x": base64url(x), "y": base64url(y) });
                    (*alg, jwk)
                }
                Signer::Rsa(key) => {
                    let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
                    let jwk = serde_json::json!({ "e": base64url(&public.e), "kty": "RSA", "n": base64url(&public.n) });
                    ("RS256", jwk)
                }
            };
            serde_json::json!({ "alg": alg, "jwk": jwk, "nonce": nonce, "url": url })
        }

        /// The flattened JSON serialization of `payload`, signed.
        pub fn sign(
            &self,
            payload: &serde_json::Value,
            nonce: &str,
            url: &str,
        ) -> Result<Vec<u8>, ring::error::Unspecified> {
            let protected = base64url(self.protected(nonce, url).to_string());
            let payload = base64url(payload.to_string());
            let input = format!("{protected}.{payload}");
            let rng = SystemRandom::new();
            let signature = match self {
                Signer::Ecdsa(key, ..) => key
                    .sign(&rng, input.as_bytes())
                    .map(|s| s.as_ref().to_vec())?,
                Signer::Rsa(key) => {
                    let mut out = vec![0; key.public().modulus_len()];
                    key.sign(
                        &signature::RSA_PKCS1_SHA256,
                        &rng,
                        input.as_bytes(),
                        &mut out,
                    )?;
                    out
                }
            };
            Ok(serde_json::json!({
                "protected": protected,
                "payload": payload,
                "signature": base64url(signature),
            })
            .to_string()
            .into_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_worded_from_the_problem_document_or_the_status() {
        let problem =
            br#"{"type":"urn:ietf:params:acme:error:unauthorized","detail":"not this key"}"#;
        let refusal = Refusal::of(http::StatusCode::FORBIDDEN, problem);
        assert_eq!(
            refusal.to_string(),
            "not this key (urn:ietf:params:acme:error:unauthorized)"
        );
        let plain = Refusal::of(http::StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(plain.to_string(), "HTTP 502: upstream down");
        let key = jws::Signer::from_pem("not a key")
            .err()
            .map(|e| e.to_string());
        assert!(key.is_some_and(|e| e.starts_with("not a PKCS#8 private key")));
    }
}
