//! `certkeeper inspect`: a doctor for any TLS endpoint, managed by certkeeper or not. One
//! handshake, then each finding in one sentence with its fix: expired or not yet valid, the name
//! not covered (or covered, but written in another case than the certificate's), an incomplete
//! or disordered chain, a chain to an untrusted or self-signed root, certificate and key files
//! that do not match, and how long it is still valid.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::names::DomainName;
use crate::preflight::Severity;
use crate::timefmt;

/// What `inspect` found at one endpoint.
#[derive(Debug, Serialize)]
pub struct Report {
    pub endpoint: String,
    pub name: String,
    /// The certificates the server sent, leaf first.
    pub chain: Vec<String>,
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

impl Report {
    /// 0: all good, 1: a warning, 2: a failure (as monitoring checks count).
    pub fn exit_code(&self) -> u8 {
        self.findings
            .iter()
            .map(|f| f.severity.level())
            .max()
            .unwrap_or(0)
    }
}

/// Where to look and what else to check.
pub struct Target<'a> {
    /// `HOST:PORT`.
    pub address: &'a str,
    /// The name clients ask for, exactly as they write it.
    pub name: &'a str,
    /// Extra trusted roots (PEM), besides the public ones.
    pub roots: Option<&'a Path>,
    /// The certificate and key files the server is configured with.
    pub files: Option<(&'a Path, &'a Path)>,
    /// This host's clock against a time source: (the source, seconds ahead; negative: behind).
    pub clock: Option<(&'a str, i64)>,
}

/// Past this many seconds off, this host's clock is worth a word.
const SKEW: i64 = 30;

/// Why an endpoint could not be inspected at all (a report needs its certificate).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(
        "{address} does not speak TLS (it answered in plain text, likely plain HTTP): is this the \
         HTTPS port? (HTTPS is usually 443, plain HTTP 80)"
    )]
    NotTls { address: String },
    #[error("cannot complete a TLS handshake with {address}: {source}")]
    Handshake {
        address: String,
        source: std::io::Error,
    },
    #[error("{address} sent a certificate that cannot be read: {source}")]
    Unreadable {
        address: String,
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    #[error("{address} sent no certificate")]
    NoCertificate { address: String },
}

pub fn inspect(target: &Target<'_>, now: SystemTime) -> Result<Report, InspectError> {
    let sni = target.name.to_ascii_lowercase();
    let address = || target.address.to_string();
    let chain = crate::deploy::verify::presented_chain(target.address, &sni).map_err(|e| {
        let not_tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| {
                matches!(
                    e,
                    rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
                )
            });
        match not_tls {
            true => InspectError::NotTls { address: address() },
            false => InspectError::Handshake {
                address: address(),
                source: e,
            },
        }
    })?;
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .map(|der| X509Certificate::from_der(der).map(|(_, cert)| cert))
        .collect::<Result<_, _>>()
        .map_err(|source| InspectError::Unreadable {
            address: address(),
            source,
        })?;
    let Some(leaf) = parsed.first() else {
        return Err(InspectError::NoCertificate { address: address() });
    };
    let mut findings = Vec::new();
    let mut say = |severity, message: String| findings.push(Finding { severity, message });

    let validity = leaf.validity();
    let not_after: SystemTime = validity.not_after.to_datetime().into();
    let not_before: SystemTime = validity.not_before.to_datetime().into();
    let days = |d: Duration| d.as_secs() / 86_400;
    // The time by the configured source, when there is one: it tells a skewed clock from a
    // certificate that is really out of date.
    let true_now = match target.clock {
        Some((_, ahead)) if ahead >= 0 => now - Duration::from_secs(ahead.unsigned_abs()),
        Some((_, behind)) => now + Duration::from_secs(behind.unsigned_abs()),
        None => now,
    };
    if let Some((source, ahead)) = target.clock {
        let off = format!(
            "{}s {} {source}",
            ahead.abs(),
            if ahead >= 0 { "ahead of" } else { "behind" }
        );
        if ahead.abs() > SKEW {
            say(
                Severity::Warn,
                format!(
                    "this host's clock is {off}: fix it (timedatectl set-ntp true); every validity judgment here depends on it"
                ),
            );
        } else {
            say(
                Severity::Ok,
                format!(
                    "this host's clock is within {}s of {source}",
                    ahead.abs().max(1)
                ),
            );
        }
    }
    if now > not_after && true_now <= not_after {
        say(
            Severity::Fail,
            format!(
                "the certificate looks expired ({}) only because this host's clock is ahead: by the time \
                 source it is still valid; fix this host's clock (timedatectl set-ntp true), not the certificate",
                timefmt::utc(not_after)
            ),
        );
    } else if now < not_before && true_now >= not_before {
        say(
            Severity::Fail,
            format!(
                "the certificate looks not yet valid (from {}) only because this host's clock is behind: \
                 fix this host's clock (timedatectl set-ntp true), not the certificate",
                timefmt::utc(not_before)
            ),
        );
    } else if now > not_after {
        let ago = now.duration_since(not_after).unwrap_or_default();
        say(
            Severity::Fail,
            format!(
                "the certificate expired on {} ({} days ago): renew it and reload the server \
                 (certkeeper renew --force NAME); if that date looks wrong, check this host's clock \
                 (timedatectl)",
                timefmt::utc(not_after),
                days(ago)
            ),
        );
    } else if now < not_before {
        say(
            Severity::Fail,
            format!(
                "the certificate is not valid before {}: this host's clock is behind (timedatectl \
                 set-ntp true), or the certificate was issued by a CA whose clock is ahead",
                timefmt::utc(not_before)
            ),
        );
    }

    let names = crate::deploy::bundle::san_names(leaf);
    check_name(target.name, &names, &mut say);
    check_chain(&chain, &parsed, target, now, &mut say);
    if let Some((cert, key)) = target.files {
        check_files(cert, key, &chain[0], &mut say);
    }

    let left = not_after.duration_since(now).ok();
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    if let Some(left) = left {
        let message = format!(
            "valid until {} ({} days left), for {}",
            timefmt::utc(not_after),
            days(left),
            names.join(", ")
        );
        // Renewals happen with a third of the lifetime left: less than that means they fail.
        match left < lifetime / 3 {
            true => say(
                Severity::Warn,
                format!(
                    "{message}: less than a third of its lifetime is left; it should have been renewed \
                     by now (are its renewals failing?)"
                ),
            ),
            false => say(Severity::Ok, message),
        }
    }
    Ok(Report {
        endpoint: target.address.to_string(),
        name: target.name.to_string(),
        chain: parsed.iter().map(|c| c.subject().to_string()).collect(),
        not_after: Some(timefmt::utc(not_after)),
        days_left: left.map(|l| days(l) as i64),
        findings,
    })
}

fn check_name(asked: &str, names: &[String], say: &mut impl FnMut(Severity, String)) {
    let covered =
        DomainName::parse(asked).is_ok_and(|name| names.iter().any(|n| name.is_covered_by(n)));
    if !covered {
        say(
            Severity::Fail,
            format!(
                "the certificate does not cover {asked}; it names {}: add {asked} to the certificate's \
                 domains, or point clients at a name it covers",
                if names.is_empty() {
                    "nothing".into()
                } else {
                    names.join(", ")
                }
            ),
        );
        return;
    }
    let exact = names.iter().any(|n| {
        n == asked
            || n.strip_prefix("*.")
                .is_some_and(|base| asked.ends_with(base))
    });
    if !exact {
        say(
            Severity::Warn,
            format!(
                "{asked} is written in another case than the certificate's {}: DNS names are \
                 case-insensitive, so the certificate is valid for it; a client that reports \
                 \"certificate verification failed\" here compares names case-sensitively: write the \
                 host name in lowercase in that client's configuration",
                names.join(", ")
            ),
        );
    }
}

fn check_chain(
    chain: &[CertificateDer<'static>],
    parsed: &[X509Certificate<'_>],
    target: &Target<'_>,
    now: SystemTime,
    say: &mut impl FnMut(Severity, String),
) {
    let leaf = &parsed[0];
    let self_signed = leaf.issuer() == leaf.subject();
    let trusted = trust(chain, target, now);
    // A root found for the leaf alone signed it directly (mkcert, small private CAs): nothing
    // is missing then.
    let root_signed = !matches!(
        trusted,
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        ))
    );
    let incomplete = parsed.len() == 1 && !self_signed && !root_signed;
    if incomplete {
        say(
            Severity::Fail,
            format!(
                "incomplete chain: the server sends only its own certificate, without the intermediate \
                 that signed it ({}); browsers may cope, most other clients fail: configure fullchain.pem, \
                 not cert.pem",
                leaf.issuer()
            ),
        );
    }
    for (index, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer() == pair[1].subject() {
            continue;
        }
        let sent_later = parsed[index + 1..]
            .iter()
            .any(|c| c.subject() == pair[0].issuer());
        match sent_later {
            true => say(
                Severity::Fail,
                format!(
                    "chain out of order: certificate {} ({}) did not sign certificate {} (issued by {}); \
                     send the leaf first, then each issuer in turn (fullchain.pem as certkeeper writes it)",
                    index + 2,
                    pair[1].subject(),
                    index + 1,
                    pair[0].issuer()
                ),
            ),
            false => say(
                Severity::Fail,
                format!(
                    "wrong intermediate: certificate {} was issued by {}, which the server does not \
                     send; it sends {} instead (another CA's or an old intermediate): serve the chain \
                     the CA issued with this certificate (fullchain.pem as certkeeper writes it)",
                    index + 1,
                    pair[0].issuer(),
                    pair[1].subject()
                ),
            ),
        }
        break;
    }
    match trusted {
        Ok(()) => say(
            Severity::Ok,
            format!("the chain ({} certificates) leads to a trusted root", chain.len()),
        ),
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
            if self_signed =>
        {
            say(
                Severity::Fail,
                "the certificate is self-signed: no client trusts it unless told to; put a certificate \
                 from a CA in its place (certkeeper obtains one)"
                    .into(),
            )
        }
        // Said above: the missing intermediate is why no root is found.
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
            if incomplete => {}
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => say(
            Severity::Fail,
            format!(
                "the chain leads to a root that is not trusted here ({}): a test or private CA, a \
                 missing intermediate, or a root too new for trust stores (when the CA offers another \
                 chain, acme.preferred_chain picks it); pass its root with --root if it is yours",
                parsed.last().map(|c| c.issuer().to_string()).unwrap_or_default()
            ),
        ),
        // Expiry and names were explained above in the operator's terms.
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired
            | rustls::CertificateError::ExpiredContext { .. }
            | rustls::CertificateError::NotValidYet
            | rustls::CertificateError::NotValidYetContext { .. }
            | rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) => {}
        Err(e) => say(Severity::Fail, format!("the chain does not verify: {e}")),
    }
}

/// Whether a client trusting the public roots (and `--root`) accepts `chain` for the name.
fn trust(
    chain: &[CertificateDer<'static>],
    target: &Target<'_>,
    now: SystemTime,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = target.roots {
        let extra = CertificateDer::pem_file_iter(path)
            .map_err(|e| rustls::Error::General(format!("--root {}: {e}", path.display())))?;
        for cert in extra.flatten() {
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    let name = ServerName::try_from(target.name.to_ascii_lowercase())
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let seconds = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &name,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(seconds)),
        )
        .map(|_| ())
}

/// The server's configured files: the key must match the certificate, and the certificate
/// must be the one served.
fn check_files(
    cert: &Path,
    key: &Path,
    served: &CertificateDer<'_>,
    say: &mut impl FnMut(Severity, String),
) {
    let read =
        |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    let (chain_pem, key_pem) = match (read(cert), read(key)) {
        (Ok(chain), Ok(key)) => (chain, key),
        (Err(e), _) | (_, Err(e)) => return say(Severity::Fail, format!("cannot read {e}")),
    };
    let bundle = crate::deploy::bundle::Bundle::from_pem(&chain_pem, &key_pem)
        .and_then(|bundle| bundle.check_key().map(|()| bundle));
    match bundle {
        Err(e) => say(
            Severity::Fail,
            format!(
                "{} and {} do not go together: {e}; give the server the key that was made with this \
                 certificate (certkeeper writes them as one set: fullchain.pem and privkey.pem of one version)",
                cert.display(),
                key.display()
            ),
        ),
        Ok(bundle) if bundle.chain().first().is_some_and(|file| file != served) => say(
            Severity::Fail,
            format!(
                "the server does not serve {}: it still holds an older certificate; reload or restart it",
                cert.display()
            ),
        ),
        Ok(_) => say(
            Severity::Ok,
            format!(
                "{} and {} match, and are what the server serves",
                cert.display(),
                key.display()
            ),
        ),
    }
}
