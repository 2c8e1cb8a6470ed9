//! Checks that a live TLS endpoint presents exactly the certificate chain we deployed.
//!
//! This is an identity check, not a trust check: the handshake accepts whatever the server
//! presents (the signatures of the handshake itself are still verified), and the presented
//! chain is then compared byte for byte with the chain we wrote. A reload that did not take
//! effect, a server still holding the old file, or a missing intermediate all show up here.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::Endpoint;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{endpoint} (SNI {sni}) {problem}")]
pub struct VerifyError {
    pub endpoint: String,
    pub sni: String,
    pub problem: String,
}

/// Waits until every endpoint presents `expected` (leaf first), retrying each for up to
/// `timeout` (a reload can take a moment to reach every worker).
pub async fn wait_until_served(
    endpoints: &[Endpoint],
    expected: &[CertificateDer<'static>],
    timeout: Duration,
) -> Result<(), VerifyError> {
    for endpoint in endpoints {
        let deadline = Instant::now() + timeout;
        loop {
            let (endpoint_owned, expected_owned) = (endpoint.clone(), expected.to_vec());
            let checked =
                tokio::task::spawn_blocking(move || check(&endpoint_owned, &expected_owned))
                    .await
                    .unwrap_or_else(|e| Err(fail(endpoint, format!("check failed: {e}"))));
            match checked {
                Ok(()) => break,
                Err(e) if Instant::now() + RETRY_EVERY >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(RETRY_EVERY).await,
            }
        }
    }
    Ok(())
}

fn fail(endpoint: &Endpoint, problem: String) -> VerifyError {
    VerifyError {
        endpoint: endpoint.address.clone(),
        sni: endpoint.sni.to_string(),
        problem,
    }
}

/// One handshake with `endpoint`, compared with `expected`, right after deploying it.
pub fn check(endpoint: &Endpoint, expected: &[CertificateDer<'static>]) -> Result<(), VerifyError> {
    compare(endpoint, expected).map_err(|mismatch| {
        let problem = match mismatch {
            Mismatch::Unreachable(e) => format!("cannot be checked: {e}"),
            Mismatch::NoCertificate => "presented no certificate".into(),
            Mismatch::Other { found, wanted } => format!(
                "still serves another certificate ({found}) instead of the new one ({wanted}): the reload did not take effect"
            ),
            Mismatch::Chain { presented, expected } => format!(
                "serves the new certificate but a chain of {presented} certificate(s) instead of {expected}: clients without the intermediates will fail; serve fullchain.pem"
            ),
        };
        fail(endpoint, problem)
    })
}

/// How what an endpoint presents differs from the chain certkeeper deployed for it.
#[derive(Debug)]
pub enum Mismatch {
    Unreachable(io::Error),
    NoCertificate,
    /// Another leaf; each described by serial and expiry.
    Other {
        found: String,
        wanted: String,
    },
    /// The right leaf with another chain (mostly: without the intermediates).
    Chain {
        presented: usize,
        expected: usize,
    },
}

impl Mismatch {
    /// What `endpoint` does wrong for the certificate `name` deployed earlier, and the fix.
    fn sentence(&self, endpoint: &Endpoint, name: &str) -> String {
        let at = format!("{} (SNI {})", endpoint.address, endpoint.sni);
        match self {
            Mismatch::Unreachable(e) => {
                format!("{at} cannot be checked: {e}: is the server running, on this address?")
            }
            Mismatch::NoCertificate => format!("{at} presented no certificate"),
            Mismatch::Other { found, wanted } => format!(
                "{at} serves another certificate ({found}) than the one deployed for {name} \
                 ({wanted}): the server was not reloaded since, or loads other files; run its \
                 reload and check the paths it reads"
            ),
            Mismatch::Chain {
                presented,
                expected,
            } => format!(
                "{at} serves the certificate deployed for {name} with a chain of {presented} \
                 certificate(s) instead of {expected}: clients without the intermediates fail; \
                 serve fullchain.pem"
            ),
        }
    }
}

/// An endpoint that does not serve the certificate deployed for it: worded with what is wrong
/// and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{}", .mismatch.sentence(.endpoint, .name))]
pub struct Unserved {
    endpoint: Endpoint,
    name: String,
    mismatch: Mismatch,
}

/// Whether `endpoint` serves `deployed`, the chain of the certificate `name`: a sentence
/// saying so, or why not.
pub async fn served(
    endpoint: &Endpoint,
    name: &str,
    deployed: Vec<CertificateDer<'static>>,
) -> Result<String, Unserved> {
    let owned = endpoint.clone();
    let compared = tokio::task::spawn_blocking(move || compare(&owned, &deployed))
        .await
        .unwrap_or_else(|e| Err(Mismatch::Unreachable(io::Error::other(e))));
    match compared {
        Ok(()) => Ok(format!(
            "{} (SNI {}) serves the certificate deployed for {name}, with its whole chain",
            endpoint.address, endpoint.sni
        )),
        Err(mismatch) => Err(Unserved {
            endpoint: endpoint.clone(),
            name: name.to_string(),
            mismatch,
        }),
    }
}

/// One handshake with `endpoint`, compared with `expected` (leaf first).
pub fn compare(endpoint: &Endpoint, expected: &[CertificateDer<'static>]) -> Result<(), Mismatch> {
    let presented = presented(endpoint).map_err(Mismatch::Unreachable)?;
    let describe = |der: &CertificateDer<'_>| {
        crate::deploy::bundle::read_leaf_der(der)
            .map(|leaf| {
                format!(
                    "serial {}, not after {}",
                    leaf.serial,
                    crate::timefmt::utc(leaf.not_after)
                )
            })
            .unwrap_or_else(|_| "unreadable".into())
    };
    match (presented.first(), expected.first()) {
        (Some(found), Some(wanted)) if found != wanted => Err(Mismatch::Other {
            found: describe(found),
            wanted: describe(wanted),
        }),
        (None, _) => Err(Mismatch::NoCertificate),
        _ if presented != expected => Err(Mismatch::Chain {
            presented: presented.len(),
            expected: expected.len(),
        }),
        _ => Ok(()),
    }
}

fn presented(endpoint: &Endpoint) -> io::Result<Vec<CertificateDer<'static>>> {
    presented_chain(&endpoint.address, endpoint.sni.as_str())
}

/// The chain `address` presents for `sni`, leaf first, whatever it is.
pub fn presented_chain(address: &str, sni: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_string()).map_err(io::Error::other)?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;

    let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing");
    for addr in address.to_socket_addrs()? {
        let mut socket = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(socket) => socket,
            Err(e) => {
                last = e;
                continue;
            }
        };
        socket.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        socket.set_write_timeout(Some(CONNECT_TIMEOUT))?;
        socket.set_nodelay(true)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut socket)?;
        }
        let chain = conn.peer_certificates().unwrap_or_default();
        return Ok(chain.iter().map(|c| c.clone().into_owned()).collect());
    }
    Err(last)
}

/// Accepts any presented chain (the caller looks at it afterwards), but still checks the
/// handshake's signatures, so the server proves it holds the key of what it presents. In TLS
/// 1.3 only the key is used, so a certificate webpki would refuse to parse (the critical
/// acmeIdentifier extension of TLS-ALPN-01) is checked too.
#[derive(Debug)]
pub(crate) struct AcceptAny(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| rustls::Error::General(format!("unreadable certificate: {e}")))?;
        let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from(parsed.public_key().raw);
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &spki,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
