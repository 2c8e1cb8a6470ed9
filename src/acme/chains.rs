//! Choosing among the certificate chains a CA offers (RFC 8555 §7.4.2). `preferred_chain`
//! names an issuer, as certbot's `--preferred-chain` does: the chain whose topmost certificate
//! that issuer signed wins, else one that names it anywhere, else the CA's default chain.
//! Let's Encrypt's gen-Y chains are the case in point: by default they end at a root few
//! trust stores hold yet, and Java servers and players without AIA fetching refuse them.

use instant_acme::Account;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::http::Downloads;

/// At most this many alternates are fetched (Let's Encrypt offers one or two).
const MAX_ALTERNATES: usize = 4;

/// The chain to deploy: `default` (downloaded from `url`) or one of its alternates.
pub(super) async fn choose(
    account: &Account,
    downloads: &Downloads,
    url: &str,
    default: String,
    preferred: &str,
) -> String {
    let Some(download) = downloads.take(url) else {
        tracing::warn!(
            url,
            "the CA's certificate download was not seen; keeping its default chain"
        );
        return default;
    };
    let mut best = (rank(&default, preferred), default);
    for alternate in download.alternates.iter().take(MAX_ALTERNATES) {
        if best.0 == Rank::Topmost {
            break;
        }
        // instant-acme has no call for a chain's URL: its POST-as-GET of an order is signed
        // the same way, and `downloads` keeps the chain it brings back (the order parse fails).
        let _ = account.order(alternate.clone()).await;
        let Some(pem) = downloads
            .take(alternate)
            .and_then(|d| String::from_utf8(d.pem.to_vec()).ok())
        else {
            tracing::warn!(url = %alternate, "could not fetch an alternate chain the CA offers");
            continue;
        };
        let rank = rank(&pem, preferred);
        if rank > best.0 {
            best = (rank, pem);
        }
    }
    match best.0 {
        // Asked for and not had (a cross-sign retired, a name mistyped): worth a warning.
        Rank::None => tracing::warn!(
            preferred,
            offered = download.alternates.len() + 1,
            "no chain the CA offers names the preferred issuer; keeping its default chain \
             (check acme.preferred_chain against the issuers the CA names)"
        ),
        _ => tracing::info!(
            preferred,
            topmost = topmost_issuer(&best.1).unwrap_or_default(),
            "certificate chain chosen"
        ),
    }
    best.1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    None,
    /// `preferred` signed some certificate of the chain.
    Anywhere,
    /// `preferred` signed the chain's topmost certificate.
    Topmost,
}

fn rank(chain_pem: &str, preferred: &str) -> Rank {
    let issuers = issuers(chain_pem);
    let matches = |issuer: &String| issuer.eq_ignore_ascii_case(preferred.trim());
    match issuers.last() {
        Some(top) if matches(top) => Rank::Topmost,
        _ if issuers.iter().any(matches) => Rank::Anywhere,
        _ => Rank::None,
    }
}

fn topmost_issuer(chain_pem: &str) -> Option<String> {
    issuers(chain_pem).pop()
}

/// The common name of each certificate's issuer, leaf first.
fn issuers(chain_pem: &str) -> Vec<String> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|der| {
            let (_, cert) = X509Certificate::from_der(&der).ok()?;
            let name = cert.issuer().iter_common_name().next()?.as_str().ok()?;
            Some(name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf, its intermediate and the intermediate's issuer, as a CA serves them (no root).
    fn chain(root: &str) -> String {
        let root_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, root);
        let root = rcgen::Issuer::new(params, root_key);

        let int_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Intermediate E9");
        let int_cert = params.signed_by(&int_key, &root).unwrap();
        let intermediate = rcgen::Issuer::new(params, int_key);

        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["media.example.com".into()]).unwrap();
        let leaf = params.signed_by(&leaf_key, &intermediate).unwrap();
        format!("{}{}", leaf.pem(), int_cert.pem())
    }

    #[test]
    fn the_issuer_of_the_topmost_certificate_ranks_first() {
        let pem = chain("ISRG Root YE");
        assert_eq!(issuers(&pem), ["Intermediate E9", "ISRG Root YE"]);
        assert_eq!(rank(&pem, "isrg root ye"), Rank::Topmost);
        assert_eq!(rank(&pem, "Intermediate E9"), Rank::Anywhere);
        assert_eq!(rank(&pem, "ISRG Root X1"), Rank::None);
        assert_eq!(topmost_issuer(&pem).as_deref(), Some("ISRG Root YE"));
    }
}
