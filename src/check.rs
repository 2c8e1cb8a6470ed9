//! `check`'s findings for a set of certificates: the pre-flight per name (its probe served by
//! whichever listener runs: the daemon's, or the command's own), the clock against the CA's,
//! and in cluster mode etcd and the cluster secret. Presenting them is the CLI's business.

use crate::challenge::http01::Tokens;
use crate::cluster::{Cluster, ClusterError, Inspection};
use crate::config::{CertificateConfig, ClusterConfig, Config};
use crate::preflight::{Check, Finding, Preflight, Severity};

/// Every finding for `certs`. `tokens` serves the probe, or says why no listener could be
/// bound (then names without a webroot cannot be probed).
pub async fn findings(
    config: &Config,
    certs: &[CertificateConfig],
    preflight: &Preflight,
    tokens: Result<&Tokens, String>,
    progress: impl Fn(usize, usize, &str),
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Err(why) = &tokens
        && certs.iter().any(|c| c.webroot.is_none())
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
        .flat_map(|c| c.domains.iter().map(move |d| (d, c)))
        .filter(|(d, _)| !d.is_wildcard())
        .map(|(d, c)| (d.as_str(), c))
        .collect();
    for (index, (name, cert)) in names.iter().enumerate() {
        let webroot = cert.webroot.as_deref();
        // Without a webroot, the probe is served by a listener: no listener, no probe.
        let tokens = match (&tokens, webroot) {
            (Ok(tokens), _) => *tokens,
            (Err(_), Some(_)) => &unserved,
            (Err(_), None) => continue,
        };
        progress(index + 1, names.len(), name);
        findings.extend(preflight.check_name(name, tokens, webroot).await);
    }
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

/// Whether HTTP-01 can succeed for every name, by `findings`.
pub fn http01_ok(findings: &[Finding]) -> bool {
    !findings
        .iter()
        .any(|f| f.severity == Severity::Fail && !matches!(f.check, Check::Clock | Check::Cluster))
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
            "etcd answers; this node is {}, the renewal lease is held by {}; {} of {} certificates published",
            settings.node,
            found.leader.as_deref().unwrap_or("no node yet"),
            found.published,
            configured,
        ),
    )];
    for (name, why) in found.unusable {
        findings.push(finding(Some(name), Severity::Fail, why));
    }
    findings
}
