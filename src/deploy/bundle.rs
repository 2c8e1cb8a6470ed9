//! A certificate chain with its private key, and the checks it must pass before it is deployed.
//!
//! A bundle is refused, and the previous certificate kept, when the key does not match the
//! leaf, the leaf does not cover every configured name, the chain is out of order, or the leaf
//! has expired. Each refusal says which rule failed.

use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zeroize::Zeroizing;

use crate::names::DomainName;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the certificate file holds no PEM certificate")]
    NoCertificate,
    #[error("certificate {index} of the chain cannot be parsed: {source}")]
    BadCertificate {
        index: usize,
        source: CertificateError,
    },
    #[error("the private key cannot be read: {0}")]
    BadKey(#[source] KeyError),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("the certificate does not cover {missing}; it names {present}")]
    NamesNotCovered { missing: String, present: String },
    #[error("the chain is out of order: certificate {index} is not signed by certificate {next}")]
    ChainOrder { index: usize, next: usize },
    #[error("the certificate expired (not after {0})")]
    Expired(String),
    #[error(
        "the certificate is not valid before {0}, beyond the allowed clock skew: check this \
         host's clock (timedatectl) or the CA's"
    )]
    NotYetValid(String),
    #[error("cannot build the PKCS#12 keystore: {0}")]
    Pkcs12(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why one certificate of a chain cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error(transparent)]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error(transparent)]
    X509(#[from] x509_parser::nom::Err<x509_parser::error::X509Error>),
}

/// Why a private key cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Pem(#[from] rustls_pki_types::pem::Error),
    #[error(transparent)]
    Unusable(#[from] rustls::Error),
}

/// How far in the future a new certificate's notBefore may lie: CAs backdate a little, and
/// clocks drift a little; more than this means one of the clocks is wrong.
pub const ALLOWED_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

/// What certkeeper needs to know about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub serial: String,
    pub names: Vec<String>,
}

/// A leaf-first certificate chain and its key, as PEM text and DER.
#[derive(Clone)]
pub struct Bundle {
    chain: Vec<CertificateDer<'static>>,
    key_pem: Zeroizing<String>,
}

impl Bundle {
    /// Parses a leaf-first PEM chain (as an ACME CA returns it) and a PEM private key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, BundleError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .enumerate()
            .map(|(index, der)| {
                der.map_err(|e| BundleError::BadCertificate {
                    index,
                    source: e.into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err(BundleError::NoCertificate);
        }
        Ok(Self {
            chain,
            key_pem: Zeroizing::new(key_pem.to_string()),
        })
    }

    pub fn leaf_info(&self) -> Result<LeafInfo, BundleError> {
        leaf_info(&self.chain[0])
    }

    /// Runs every pre-deployment rule against `domains` at time `now`.
    pub fn check(&self, domains: &[DomainName], now: SystemTime) -> Result<LeafInfo, BundleError> {
        let info = self.leaf_info()?;
        // Names first: "issued for other names" tells more than "the key does not match".
        check_names(&info, domains)?;
        self.check_key()?;
        self.check_order()?;
        if info.not_after <= now {
            return Err(BundleError::Expired(crate::timefmt::utc(info.not_after)));
        }
        if info.not_before > now + ALLOWED_SKEW {
            return Err(BundleError::NotYetValid(crate::timefmt::utc(
                info.not_before,
            )));
        }
        Ok(info)
    }

    /// The DER certificates, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// A PKCS#12 keystore (AES-256, HMAC-SHA256) holding the key and the whole chain under
    /// the alias `certkeeper`, as Java servers (Wowza) and `openssl pkcs12` read it.
    pub fn pkcs12(&self, password: &str) -> Result<Vec<u8>, BundleError> {
        let fail = |e| BundleError::Pkcs12(Box::new(e));
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| BundleError::Pkcs12(Box::new(e)))?;
        let key = p12_keystore::PrivateKey::from_der(key.secret_der()).map_err(fail)?;
        let certs = self
            .chain
            .iter()
            .map(|der| p12_keystore::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let local_key_id = sha1(&self.chain[0]);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry(
            PKCS12_ALIAS,
            p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
                local_key_id,
                key,
                certs,
            )),
        );
        store.writer(password).write().map_err(fail)
    }

    /// Whether a PKCS#12 keystore opens with `password` and holds this bundle's leaf.
    pub fn pkcs12_holds_leaf(&self, der: &[u8], password: &str) -> bool {
        p12_keystore::KeyStore::from_pkcs12(
            der,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .ok()
        .and_then(|store| {
            let (_, chain) = store.private_key_chain()?;
            Some(chain.certs().first()?.as_der() == self.chain[0].as_ref())
        })
        .unwrap_or(false)
    }

    pub fn check_key(&self) -> Result<(), BundleError> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| BundleError::BadKey(e.into()))?;
        let provider = rustls::crypto::ring::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| BundleError::BadKey(e.into()))?;
        rustls::sign::CertifiedKey::new(self.chain.clone(), signing_key)
            .keys_match()
            .map_err(|_| BundleError::KeyMismatch)
    }

    fn check_order(&self) -> Result<(), BundleError> {
        let parsed = self
            .chain
            .iter()
            .enumerate()
            .map(|(index, der)| parse(der, index))
            .collect::<Result<Vec<_>, _>>()?;
        for (index, pair) in parsed.windows(2).enumerate() {
            let (cert, issuer) = (&pair[0], &pair[1]);
            let signed = cert.issuer() == issuer.subject()
                && cert.verify_signature(Some(issuer.public_key())).is_ok();
            if !signed {
                return Err(BundleError::ChainOrder {
                    index,
                    next: index + 1,
                });
            }
        }
        Ok(())
    }

    pub fn cert_pem(&self) -> String {
        pem_block(&self.chain[0])
    }

    /// The intermediates, without the leaf.
    pub fn chain_pem(&self) -> String {
        self.chain[1..].iter().map(pem_block).collect()
    }

    pub fn fullchain_pem(&self) -> String {
        self.chain.iter().map(pem_block).collect()
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Full chain then key, in one file (ZLMediaKit, HAProxy).
    pub fn combined_pem(&self) -> Zeroizing<String> {
        let mut combined = Zeroizing::new(self.fullchain_pem());
        combined.push_str(&self.key_pem);
        combined
    }
}

/// Reads the leaf of a PEM chain without its key (status, scheduling).
pub fn read_leaf(chain_pem: &[u8]) -> Result<LeafInfo, BundleError> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem)
        .next()
        .ok_or(BundleError::NoCertificate)?
        .map_err(|e| BundleError::BadCertificate {
            index: 0,
            source: e.into(),
        })?;
    leaf_info(&leaf)
}

/// Reads a DER certificate (a live endpoint's leaf).
pub fn read_leaf_der(der: &CertificateDer<'_>) -> Result<LeafInfo, BundleError> {
    leaf_info(der)
}

fn leaf_info(der: &CertificateDer<'_>) -> Result<LeafInfo, BundleError> {
    let cert = parse(der, 0)?;
    let names = san_names(&cert)
        .into_iter()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    let validity = cert.validity();
    Ok(LeafInfo {
        not_before: validity.not_before.to_datetime().into(),
        not_after: validity.not_after.to_datetime().into(),
        serial: cert.raw_serial_as_string(),
        names,
    })
}

/// The DNS names (as written) and IP addresses of a certificate's SAN extension.
pub fn san_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(std::net::IpAddr::from),
                _ => None,
            }
            .map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn check_names(info: &LeafInfo, domains: &[DomainName]) -> Result<(), BundleError> {
    let missing: Vec<&str> = domains
        .iter()
        .filter(|d| !info.names.iter().any(|n| d.is_covered_by(n)))
        .map(DomainName::as_str)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BundleError::NamesNotCovered {
            missing: missing.join(", "),
            present: info.names.join(", "),
        })
    }
}

fn parse<'a>(
    der: &'a CertificateDer<'_>,
    index: usize,
) -> Result<X509Certificate<'a>, BundleError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| BundleError::BadCertificate {
            index,
            source: e.into(),
        })
}

pub const PKCS12_ALIAS: &str = "certkeeper";

/// The keystore entry's local key id: the leaf's SHA-1, as Java's keytool makes it.
fn sha1(der: &CertificateDer<'_>) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .to_vec()
}

fn pem_block(der: &CertificateDer<'_>) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.as_ref()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    struct Made {
        chain: String,
        key: String,
        wrong_order: String,
    }

    fn make(names: &[&str], days: i64) -> Made {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test intermediate");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        Made {
            chain: format!("{}{}", leaf.pem(), ca.pem()),
            key: leaf_key.serialize_pem(),
            wrong_order: format!("{}{}", ca.pem(), leaf.pem()),
        }
    }

    fn domains(names: &[&str]) -> Vec<DomainName> {
        names
            .iter()
            .map(|n| DomainName::parse(n).unwrap())
            .collect()
    }

    #[test]
    fn a_good_bundle_passes() {
        let made = make(&["a.example.com", "*.example.com"], 30);
        let bundle = Bundle::from_pem(&made.chain, &made.key).unwrap();
        let info = bundle
            .check(
                &domains(&["A.example.com", "b.example.com"]),
                SystemTime::now(),
            )
            .unwrap();
        assert_eq!(info.names, ["a.example.com", "*.example.com"]);
        assert!(bundle.combined_pem().ends_with(&made.key));
        assert_eq!(bundle.chain_pem().matches("BEGIN CERTIFICATE").count(), 1);
        let p12 = bundle.pkcs12("secret").unwrap();
        assert!(bundle.pkcs12_holds_leaf(&p12, "secret"));
        assert!(!bundle.pkcs12_holds_leaf(&p12, "wrong"));
    }

    #[test]
    fn each_rule_refuses() {
        let made = make(&["a.example.com"], 30);
        let other = make(&["a.example.com"], 30);
        let now = SystemTime::now();
        let names = domains(&["a.example.com"]);
        let mismatch = Bundle::from_pem(&made.chain, &other.key).unwrap();
        assert!(matches!(
            mismatch.check(&names, now),
            Err(BundleError::KeyMismatch)
        ));
        let bundle = Bundle::from_pem(&made.chain, &made.key).unwrap();
        assert!(matches!(
            bundle.check(&domains(&["c.example.com"]), now),
            Err(BundleError::NamesNotCovered { .. })
        ));
        let later = now + std::time::Duration::from_secs(40 * 86400);
        assert!(matches!(
            bundle.check(&names, later),
            Err(BundleError::Expired(_))
        ));
        let clock_behind = now - std::time::Duration::from_secs(2 * 86400);
        assert!(matches!(
            bundle.check(&names, clock_behind),
            Err(BundleError::NotYetValid(_))
        ));
        let reversed = Bundle::from_pem(&made.wrong_order, &made.key).unwrap();
        assert!(reversed.check(&names, now).is_err());
        assert!(matches!(
            Bundle::from_pem("", &made.key),
            Err(BundleError::NoCertificate)
        ));
    }
}
