//! Private keys and certificate signing requests for the configured key types.
//!
//! ECDSA keys come from rcgen (ring). ring cannot generate RSA keys, so RSA keys are made by
//! the RustCrypto `rsa` crate and handed to rcgen as PKCS#8; ring then does the signing.

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rsa::pkcs8::EncodePrivateKey;

use crate::config::KeyType;
use crate::names::DomainName;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not generate a {0} key: {1}")]
    Generate(KeyType, String),
    #[error("the stored private key cannot be used: {0}")]
    Load(#[source] rcgen::Error),
    #[error("could not build the certificate request: {0}")]
    Csr(#[from] rcgen::Error),
}

/// Generates a fresh private key of `key_type`.
pub fn generate(key_type: KeyType) -> Result<KeyPair, KeyError> {
    let fail = |e: &dyn std::fmt::Display| KeyError::Generate(key_type, e.to_string());
    let rsa_bits = match key_type {
        KeyType::EcdsaP256 => {
            return KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| fail(&e));
        }
        KeyType::EcdsaP384 => {
            return KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(|e| fail(&e));
        }
        KeyType::Rsa2048 => 2048,
        KeyType::Rsa3072 => 3072,
        KeyType::Rsa4096 => 4096,
    };
    let private =
        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, rsa_bits).map_err(|e| fail(&e))?;
    let der = private.to_pkcs8_der().map_err(|e| fail(&e))?;
    KeyPair::from_pkcs8_der_and_sign_algo(&der.as_bytes().into(), &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| fail(&e))
}

/// Loads a PEM private key kept from an earlier issuance (`reuse_key`).
pub fn from_pem(pem: &str) -> Result<KeyPair, KeyError> {
    KeyPair::from_pem(pem).map_err(KeyError::Load)
}

/// A DER-encoded CSR naming every domain as a subjectAltName, with an empty subject (the CA
/// ignores it, and an empty one avoids leaking anything else).
pub fn csr(key: &KeyPair, domains: &[DomainName]) -> Result<Vec<u8>, KeyError> {
    let names: Vec<String> = domains.iter().map(|d| d.as_str().to_string()).collect();
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = DistinguishedName::new();
    Ok(params.serialize_request(key)?.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_each_ecdsa_type_and_a_csr() {
        let domains = [DomainName::parse("a.example.com").unwrap()];
        for key_type in [KeyType::EcdsaP256, KeyType::EcdsaP384] {
            let key = generate(key_type).unwrap();
            assert!(!csr(&key, &domains).unwrap().is_empty());
            assert!(from_pem(&key.serialize_pem()).is_ok());
        }
    }

    #[test]
    fn generates_rsa() {
        let key = generate(KeyType::Rsa2048).unwrap();
        assert!(key.serialize_pem().contains("PRIVATE KEY"));
    }
}
