//! One `acme-tls/1` handshake, as the CA makes it for TLS-ALPN-01: SNI the name, ALPN
//! `acme-tls/1`, and the certificate's acmeIdentifier extension read back. The certificate is
//! self-signed by design, so it is not verified as a chain: what identifies certkeeper's
//! responder is the digest it carries, which only this process knows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};

use crate::challenge::tls_alpn01::ACME_TLS;
use crate::deploy::verify::AcceptAny;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// id-pe-acmeIdentifier (RFC 8737).
const ACME_IDENTIFIER: &str = "1.3.6.1.5.5.7.1.31";

#[derive(Debug)]
pub enum Handshake {
    /// The server answered `acme-tls/1` with this acmeIdentifier value (a SHA-256 digest), or
    /// none.
    Answered(Option<Vec<u8>>),
    Refused,
    Timeout,
    Failed(String),
}

/// Makes the CA's handshake with `address` for `name`.
pub async fn handshake(address: SocketAddr, name: &str) -> Handshake {
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(address),
    )
    .await
    {
        Err(_) => return Handshake::Timeout,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Handshake::Refused;
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => return Handshake::Timeout,
        Ok(Err(e)) => return Handshake::Failed(format!("cannot connect: {e}")),
        Ok(Ok(stream)) => stream,
    };
    // One small request each way: no wait for a delayed ACK.
    let _ = stream.set_nodelay(true);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // TLS 1.3 only: its signature check needs only the key, not a certificate webpki accepts
    // (it refuses the critical acmeIdentifier extension).
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map(|builder| {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        });
    let mut config = match config {
        Ok(config) => config,
        Err(e) => return Handshake::Failed(e.to_string()),
    };
    config.alpn_protocols = vec![ACME_TLS.to_vec()];
    let sni = crate::challenge::tls_alpn01::server_name(name);
    let Ok(server_name) = ServerName::try_from(sni) else {
        return Handshake::Failed(format!("{name} is not a name TLS can ask for"));
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(server_name, stream))
        .await
    {
        Err(_) => {
            return Handshake::Failed(format!(
                "connected, but no TLS handshake within {}s",
                HANDSHAKE_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => return Handshake::Failed(format!("the TLS handshake failed: {e}")),
        Ok(Ok(tls)) => tls,
    };
    let (_, session) = tls.get_ref();
    let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) else {
        return Handshake::Answered(None);
    };
    Handshake::Answered(acme_identifier(leaf))
}

/// The digest in the certificate's acmeIdentifier extension, if it has one.
fn acme_identifier(leaf: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let extension = certificate
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == ACME_IDENTIFIER)?;
    // The extension's value is a DER OCTET STRING of the 32-byte digest.
    match extension.value {
        [0x04, 0x20, digest @ ..] if digest.len() == 32 => Some(digest.to_vec()),
        _ => None,
    }
}
