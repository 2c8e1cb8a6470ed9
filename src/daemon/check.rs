//! `check`'s findings for a set of certificates: the pre-flight per name (its probe served by
//! whichever listener runs: the daemon's, or the command's own), TLS-ALPN-01 where the config
//! names it, what each `verify` endpoint serves, the clock against the CA's, and in cluster
//! mode etcd and the cluster secret. Presenting them is the CLI's business.

use std::time::SystemTime;

use futures_util::future::join_all;

use crate::acme::AcmeClient;
use crate::challenge::http01::Tokens;
use crate::challenge::tls_alpn01::TlsAlpn01;
use crate::cluster::{Cluster, ClusterError, Inspection};
use crate::config::{CertificateConfig, ClusterConfig, Config, Method};
use crate::deploy::store::Store;
use crate::deploy::verify;
use crate::preflight::{Check, Finding, Preflight, Severity};

/// Why no port-80 listener serves the probe.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoListener {
    #[error(transparent)]
    Bind(#[from] crate::challenge::http01::ListenError),
    #[error("the daemon runs no port-80 listener (every certificate has a webroot)")]
    WebrootsOnly,
}

/// Every finding for `certs`. `tokens` serves the probe, or says why no listener could be
/// bound (then names without a webroot cannot be probed); `tls_alpn01` answers the TLS-ALPN-01
/// probe.
pub async fn findings(
    config: &Config,
    certs: &[CertificateConfig],
    preflight: &Preflight,
    tokens: Result<&Tokens, &NoListener>,
    tls_alpn01: &TlsAlpn01,
    progress: impl Fn(usize, usize, &str),
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let http01 = |c: &&CertificateConfig| c.challenge.allows(Method::Http01);
    if let Err(why) = &tokens
        && certs.iter().filter(http01).any(|c| c.webroot.is_none())
    {
        findings.push(Finding {
            name: None,
            address: None,
            check: Check::Port,
            severity: Severity::Fail,
            message: format!(
                "{why}; the reachability probe needs certkeeper's listener, so it was skipped"
            ),
        });
    }
    let unserved = Tokens::default();
    let names: Vec<(&str, &CertificateConfig)> = certs
        .iter()
        .filter(http01)
        .flat_map(|c| c.domains.iter().map(move |d| (d, c)))
        .filter(|(d, _)| !d.is_wildcard())
        .map(|(d, c)| (d.as_str(), c))
        .collect();
    // Asked once: in cluster mode, listing the other nodes is a request to etcd.
    let vantages = match names.is_empty() {
        true => Vec::new(),
        false => preflight.vantages().await,
    };
    for (index, (name, cert)) in names.iter().enumerate() {
        let webroot = cert.webroot.as_deref();
        // Without a webroot, the probe is served by a listener: no listener, no probe.
        let tokens = match (&tokens, webroot) {
            (Ok(tokens), _) => *tokens,
            (Err(_), Some(_)) => &unserved,
            (Err(_), None) => continue,
        };
        progress(index + 1, names.len(), name);
        findings.extend(preflight.check_name(name, tokens, webroot, &vantages).await);
    }
    findings.extend(tls_alpn_findings(certs, preflight, tls_alpn01).await);
    findings.extend(persist_findings(config, certs, preflight).await);
    findings.extend(served_findings(config, certs).await);
    match crate::acme::clock_offset(&config.acme, &config.acme.directory).await {
        Ok(offset) => findings.push(crate::preflight::clock_finding(offset)),
        Err(e) => findings.push(Finding {
            name: None,
            address: None,
            check: Check::Clock,
            severity: Severity::Warn,
            message: e.to_string(),
        }),
    }
    findings.extend(cluster_findings(config).await);
    findings
}

/// TLS-ALPN-01 per name, for the certificates whose `challenge` names it (with `auto` it is a
/// fallback, and port 443 mostly the media server's: no line then).
async fn tls_alpn_findings(
    certs: &[CertificateConfig],
    preflight: &Preflight,
    responder: &TlsAlpn01,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let named = certs
        .iter()
        .filter(|c| c.challenge.names(Method::TlsAlpn01));
    for name in named
        .flat_map(|c| c.domains.iter())
        .filter(|d| !d.is_wildcard())
    {
        let (severity, message) = match preflight
            .tls_alpn_blocker(&[name.as_str()], responder)
            .await
        {
            Some(problem) => (Severity::Fail, problem),
            None => (
                Severity::Ok,
                format!(
                    "every address of {name} answers acme-tls/1 with certkeeper's responder: tls-alpn-01 can succeed"
                ),
            ),
        };
        findings.push(Finding::about(
            name.as_str(),
            None,
            Check::TlsAlpn,
            severity,
            message,
        ));
    }
    findings
}

/// The DNS-PERSIST-01 record of each name whose certificate names it (with `auto` it is the
/// last fallback: no line then), judged for this
/// account at the configured CA (whose directory names the issuer; the account is registered
/// if there is none yet, as `persist-record` does).
async fn persist_findings(
    config: &Config,
    certs: &[CertificateConfig],
    preflight: &Preflight,
) -> Vec<Finding> {
    let using: Vec<&CertificateConfig> = (certs.iter())
        .filter(|c| c.challenge.names(Method::DnsPersist01))
        .collect();
    if using.is_empty() {
        return Vec::new();
    }
    let store = Store::new(&config.daemon.state_dir);
    let identity = match AcmeClient::connect(&config.acme, &config.acme.directory, &store).await {
        Ok(acme) => acme.persist_identity().await,
        Err(e) => Err(e),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(e) => {
            return vec![Finding {
                name: None,
                address: None,
                check: Check::Persist,
                severity: Severity::Fail,
                message: format!("cannot tell which dns-persist-01 records the CA wants: {e}"),
            }];
        }
    };
    let now = SystemTime::now();
    let mut findings = Vec::new();
    for cert in using {
        let renew_by = (store.current(&cert.name).ok().flatten()).map(|c| c.leaf.not_after);
        let found = (preflight.persist_findings(&identity, &cert.domains, renew_by, now)).await;
        findings.extend(found);
    }
    findings
}

/// Each `verify` endpoint against the certificate deployed for it, all at once. The daemon
/// looks right after deploying; this finds at any time a server that was never reloaded,
/// loads other files, or is down. Certificates not deployed yet are left out.
async fn served_findings(config: &Config, certs: &[CertificateConfig]) -> Vec<Finding> {
    let store = Store::new(&config.daemon.state_dir);
    let endpoints = certs
        .iter()
        .filter(|c| !c.verify.is_empty())
        .flat_map(|cert| {
            let deployed = store.current_chain(&cert.name);
            cert.verify
                .iter()
                .filter_map(move |endpoint| Some((cert, endpoint, deployed.clone()?)))
        });
    join_all(endpoints.map(|(cert, endpoint, deployed)| async move {
        let (severity, message) = match verify::served(endpoint, &cert.name, deployed).await {
            Ok(fine) => (Severity::Ok, fine),
            Err(wrong) => (Severity::Fail, wrong.to_string()),
        };
        Finding::about(
            endpoint.sni.as_str(),
            None,
            Check::Served,
            severity,
            message,
        )
    }))
    .await
}

/// What the findings say of each way a renewal can go wrong.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Outlook {
    /// HTTP-01 can succeed for every name it may be used for.
    pub http01_ok: bool,
    /// TLS-ALPN-01 can succeed for every name whose certificate names it.
    pub tls_alpn_ok: bool,
    /// Every `verify` endpoint serves the certificate deployed for it.
    pub served_ok: bool,
    /// This host's clock lets a renewal be deployed at all.
    pub clock_ok: bool,
    /// Every DNS-PERSIST-01 record proves control to the CA.
    pub persist_ok: bool,
}

impl Outlook {
    pub fn of(findings: &[Finding]) -> Outlook {
        let none_failed = |checks: &[Check]| {
            !(findings.iter()).any(|f| f.severity == Severity::Fail && checks.contains(&f.check))
        };
        Outlook {
            http01_ok: none_failed(&[Check::Dns, Check::Address, Check::Port, Check::Reachability]),
            tls_alpn_ok: none_failed(&[Check::TlsAlpn]),
            served_ok: none_failed(&[Check::Served]),
            clock_ok: none_failed(&[Check::Clock]),
            persist_ok: none_failed(&[Check::Persist]),
        }
    }

    pub fn all_ok(&self) -> bool {
        self.http01_ok && self.tls_alpn_ok && self.served_ok && self.clock_ok && self.persist_ok
    }
}

/// Cluster mode: who holds the lease and what etcd holds that this node can use, for the
/// certificates of `config`; `None` outside a cluster.
pub async fn inspect_cluster(
    config: &Config,
) -> Option<(&ClusterConfig, usize, Result<Inspection, ClusterError>)> {
    let settings = config.cluster.as_ref()?;
    let names: Vec<&str> = config
        .certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let inspection = match Cluster::new(settings) {
        Ok(cluster) => cluster.inspect(&names).await,
        Err(e) => Err(e),
    };
    Some((settings, names.len(), inspection))
}

/// Cluster mode: whether etcd answers, and whether this node's secret opens what is there.
async fn cluster_findings(config: &Config) -> Vec<Finding> {
    let Some((settings, configured, inspection)) = inspect_cluster(config).await else {
        return Vec::new();
    };
    let finding = |name: Option<String>, severity, message: String| Finding {
        name,
        address: None,
        check: Check::Cluster,
        severity,
        message,
    };
    let found = match inspection {
        Ok(found) => found,
        Err(e) => {
            return vec![finding(
                None,
                Severity::Fail,
                format!(
                    "{e}; this node renews nothing and installs nothing from the cluster until etcd answers"
                ),
            )];
        }
    };
    let mut findings = vec![finding(
        None,
        Severity::Ok,
        format!(
            "etcd answers; this node is {}, the renewal lease is held by {}; {} of {} certificates published; nodes probing for the pre-flight: {}",
            settings.node,
            found.leader.as_deref().unwrap_or("no node yet"),
            found.published,
            configured,
            found.probes_list(),
        ),
    )];
    for (name, why) in found.unusable {
        findings.push(finding(Some(name), Severity::Fail, why));
    }
    findings
}
