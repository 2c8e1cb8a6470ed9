//! Revocation (RFC 8555 §7.6), signed by the account key.

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

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
    use instant_acme::HttpClient;
    let signer = jws::Signer::from_pem(key_pem).map_err(|e| AcmeError::Revoke(e.to_string()))?;
    let http = super::http::AcmeHttp::new(acme.extra_root.as_deref(), acme.request_timeout)?;
    let fail = |what: &str, e: String| AcmeError::Revoke(format!("{what}: {e}"));
    let send = |request: http::Request<instant_acme::BodyWrapper<bytes::Bytes>>| {
        let response = http.request(request);
        async move {
            let mut response = response.await.map_err(|e| e.to_string())?;
            let body = response
                .body
                .into_bytes()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((response.parts, body))
        }
    };
    let get = |url: &str, head: bool| {
        let method = if head {
            http::Method::HEAD
        } else {
            http::Method::GET
        };
        http::Request::builder()
            .method(method)
            .uri(url)
            .body(instant_acme::BodyWrapper::default())
            .map_err(|e| e.to_string())
    };
    let (_, body) = send(get(directory, false).map_err(|e| fail("the directory", e))?)
        .await
        .map_err(|e| fail("the directory", e))?;
    let urls: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| fail("the directory", e.to_string()))?;
    let (Some(new_nonce), Some(revoke_url)) =
        (urls["newNonce"].as_str(), urls["revokeCert"].as_str())
    else {
        return Err(fail("the directory", "no newNonce or revokeCert".into()));
    };
    let payload = serde_json::json!({
        "certificate": jws::base64url(leaf),
        "reason": reason as u8,
    });
    // A CA may reject a nonce now and then: ask again, twice.
    let mut last = String::new();
    for _ in 0..3 {
        let (parts, _) = send(get(new_nonce, true).map_err(|e| fail("a nonce", e))?)
            .await
            .map_err(|e| fail("a nonce", e))?;
        let nonce = parts
            .headers
            .get("replay-nonce")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| fail("a nonce", "no Replay-Nonce header".into()))?;
        let body = signer
            .sign(&payload, nonce, revoke_url)
            .map_err(|e| AcmeError::Revoke(e.to_string()))?;
        let request = http::Request::post(revoke_url)
            .header(http::header::CONTENT_TYPE, "application/jose+json")
            .body(instant_acme::BodyWrapper::from(body))
            .map_err(|e| fail("the request", e.to_string()))?;
        let (parts, body) = send(request).await.map_err(|e| fail("the request", e))?;
        if parts.status.is_success() {
            return Ok(());
        }
        // An ACME problem document: its detail says what went wrong in the CA's words.
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        last = match (problem["type"].as_str(), problem["detail"].as_str()) {
            (Some(kind), Some(detail)) => format!("{detail} ({kind})"),
            _ => format!(
                "HTTP {}: {}",
                parts.status.as_u16(),
                String::from_utf8_lossy(&body)
            ),
        };
        if !last.contains("badNonce") {
            break;
        }
    }
    Err(AcmeError::Revoke(format!("the CA refused: {last}")))
}

/// The one JWS certkeeper signs itself.
mod jws {
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};

    pub fn base64url(bytes: impl AsRef<[u8]>) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub enum Signer {
        Ecdsa(EcdsaKeyPair, &'static str, &'static str),
        Rsa(RsaKeyPair),
    }

    impl Signer {
        /// The key of a PKCS#8 PEM (as certkeeper writes `privkey.pem`).
        pub fn from_pem(pem: &str) -> Result<Signer, String> {
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| format!("not a PKCS#8 private key: {e}"))?;
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
                .map_err(|e| format!("an unsupported key: {e}"))
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
        ) -> Result<Vec<u8>, String> {
            let protected = base64url(self.protected(nonce, url).to_string());
            let payload = base64url(payload.to_string());
            let input = format!("{protected}.{payload}");
            let rng = SystemRandom::new();
            let signature = match self {
                Signer::Ecdsa(key, ..) => key
                    .sign(&rng, input.as_bytes())
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|e| e.to_string())?,
                Signer::Rsa(key) => {
                    let mut out = vec![0; key.public().modulus_len()];
                    key.sign(
                        &signature::RSA_PKCS1_SHA256,
                        &rng,
                        input.as_bytes(),
                        &mut out,
                    )
                    .map_err(|e| e.to_string())?;
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
