//! The TLS-ALPN-01 responder (RFC 8737): answers `acme-tls/1` handshakes on the configured
//! address (`daemon.tls_alpn_listen`, port 443) with a self-signed certificate for the name
//! being validated that carries the key authorization's digest in its critical
//! `acmeIdentifier` extension.
//!
//! The port is held only while answers are published (bind, validate, release), so a media
//! server may use it between renewals. Handshakes that do not ask for `acme-tls/1` are refused:
//! it is no web server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS: &[u8] = b"acme-tls/1";
/// Handshakes served at once; the CA makes a few (one per vantage point).
const MAX_HANDSHAKES: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsAlpnError {
    #[error(
        "cannot listen on {addr} for tls-alpn-01: another process holds the port (a web or media \
         server on 443?); stop it during renewals, route acme-tls/1 to certkeeper with a TLS proxy \
         (docs/config.md), or use http-01 or dns-01"
    )]
    InUse { addr: SocketAddr },
    #[error(
        "cannot listen on {addr} for tls-alpn-01: permission denied; run certkeeper with \
         CAP_NET_BIND_SERVICE (the systemd unit grants it) or as root"
    )]
    Permission { addr: SocketAddr },
    #[error("cannot listen on {addr} for tls-alpn-01: {source}")]
    Other {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot make the tls-alpn-01 certificate for {name}: {source}")]
    Certificate {
        name: String,
        source: ValidationCertificateError,
    },
}

/// Why a tls-alpn-01 validation certificate cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ValidationCertificateError {
    #[error("a digest of {0} bytes")]
    Digest(usize),
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Key(#[from] rustls::Error),
}

/// The responder shared by every order: validation certificates by name, and the listener
/// while any is published.
#[derive(Clone)]
pub struct TlsAlpn01 {
    listen: SocketAddr,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    certificates: HashMap<String, Arc<CertifiedKey>>,
    /// How many publishers hold answers; the listener runs while this is above zero.
    holders: usize,
    server: Option<JoinHandle<()>>,
}

/// The answers of one order (or one probe); withdrawn, and the port released when it was the
/// last, on drop.
pub struct Publisher {
    responder: TlsAlpn01,
    names: Vec<String>,
}

impl TlsAlpn01 {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            state: Arc::default(),
        }
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Binds the port (if no one else holds answers) for a new set of answers.
    pub fn publisher(&self) -> Result<Publisher, TlsAlpnError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.server.is_none() {
            let listener = bind(self.listen)?;
            state.server = Some(tokio::spawn(serve(listener, self.clone())));
        }
        state.holders += 1;
        Ok(Publisher {
            responder: self.clone(),
            names: Vec::new(),
        })
    }

    fn certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.certificates.get(name).cloned()
    }
}

impl Publisher {
    /// Answers `acme-tls/1` handshakes for `name` with the digest of its key authorization.
    pub fn publish(&mut self, name: &str, digest: &[u8]) -> Result<(), TlsAlpnError> {
        let certificate = validation_certificate(name, digest)?;
        // An IP identifier is asked for by its reverse-DNS name (RFC 8738 §6).
        let name = &server_name(name);
        let mut state = self
            .responder
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state
            .certificates
            .insert(name.to_ascii_lowercase(), Arc::new(certificate));
        self.names.push(name.to_ascii_lowercase());
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let mut state = self
            .responder
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for name in &self.names {
            state.certificates.remove(name);
        }
        state.holders -= 1;
        if state.holders == 0
            && let Some(server) = state.server.take()
        {
            // Releases the port at once.
            server.abort();
        }
    }
}

/// A self-signed certificate for `name` with the critical acmeIdentifier extension.
fn validation_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, TlsAlpnError> {
    let failed = |source: ValidationCertificateError| TlsAlpnError::Certificate {
        name: name.to_string(),
        source,
    };
    if digest.len() != 32 {
        return Err(failed(ValidationCertificateError::Digest(digest.len())));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| failed(e.into()))?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| failed(e.into()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    let certificate = params.self_signed(&key).map_err(|e| failed(e.into()))?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: it parses the certificate as a server's would and refuses
    // the critical acmeIdentifier extension that is the whole point here.
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| failed(e.into()))?;
    Ok(CertifiedKey::new(
        vec![CertificateDer::from(certificate.der().to_vec())],
        signing,
    ))
}

impl std::fmt::Debug for TlsAlpn01 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAlpn01")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for TlsAlpn01 {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let asks_acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS));
        if !asks_acme {
            return None;
        }
        self.certificate(&hello.server_name()?.to_ascii_lowercase())
    }
}

fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, TlsAlpnError> {
    crate::net::http_server::bind_dual_stack(addr, 128).map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => TlsAlpnError::InUse { addr },
        std::io::ErrorKind::PermissionDenied => TlsAlpnError::Permission { addr },
        _ => TlsAlpnError::Other { addr, source },
    })
}

async fn serve(listener: tokio::net::TcpListener, responder: TlsAlpn01) {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
    .map(|builder| {
        builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(responder))
    });
    let Ok(config) = config.as_mut() else {
        tracing::error!("cannot set up TLS for tls-alpn-01");
        return;
    };
    config.alpn_protocols = vec![ACME_TLS.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config.clone()));
    let places = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "tls-alpn-01: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // The handshake is the whole answer; the CA closes the connection after it.
            let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            drop(place);
        });
    }
}

/// The SNI the CA sends for `identifier`: the name itself, or for an IP address its reverse
/// mapping name (`4.3.2.1.in-addr.arpa`, nibbles under `ip6.arpa`), as RFC 8738 says.
pub fn server_name(identifier: &str) -> String {
    match identifier.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let nibbles: Vec<String> = v6
                .octets()
                .iter()
                .rev()
                .flat_map(|byte| [byte & 0x0f, byte >> 4])
                .map(|nibble| format!("{nibble:x}"))
                .collect();
            format!("{}.ip6.arpa", nibbles.join("."))
        }
        Err(_) => identifier.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_identifiers_are_asked_for_by_their_reverse_name() {
        assert_eq!(server_name("192.0.2.5"), "5.2.0.192.in-addr.arpa");
        assert_eq!(
            server_name("2001:db8::1"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
        assert_eq!(server_name("Media.example.com"), "media.example.com");
    }
}
