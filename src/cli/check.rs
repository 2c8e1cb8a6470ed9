//! `certkeeper check`: the pre-flight through the running daemon (its listener serves the
//! probe), or standalone with a listener of its own (and, in cluster mode, the other nodes'
//! view); printed as a table or JSON.

use std::io::IsTerminal;
use std::time::Duration;

use super::{Failure, ended, running_daemon};
use crate::challenge::http01::{self, Tokens};
use crate::challenge::tls_alpn01::TlsAlpn01;
use crate::cluster::Cluster;
use crate::config::{Config, EX_CONFIG};
use crate::daemon::check;
use crate::daemon::control::{Reply, Request};
use crate::preflight::{Check, Finding, Preflight};

pub(super) async fn run(config: &Config, json: bool, names: Vec<String>) -> Result<(), Failure> {
    let findings = match running_daemon(config).await? {
        Some(daemon) => {
            let mut findings = Vec::new();
            let (code, message) = daemon
                .call(&Request::Check { names }, |reply| match reply {
                    Reply::Findings(found) => findings = found,
                    Reply::Line(line) if std::io::stderr().is_terminal() => eprintln!("{line}"),
                    _ => {}
                })
                .await
                .map_err(Failure::new)?;
            ended(code, message)?;
            findings
        }
        None => standalone(config, &names).await?,
    };
    let outlook = check::Outlook::of(&findings);
    match json {
        true => {
            let mut report = serde_json::to_value(outlook).map_err(Failure::new)?;
            report["findings"] = serde_json::to_value(&findings).map_err(Failure::new)?;
            let text = serde_json::to_string_pretty(&report).map_err(Failure::new)?;
            println!("{text}");
        }
        false => print_table(&findings, outlook),
    }
    match outlook.all_ok() {
        true => Ok(()),
        false => Err(Failure::new("pre-flight check failed")),
    }
}

/// The pre-flight with a listener of this command's own to serve the probe; in cluster mode
/// its probe token is shared through etcd (bound to a lease this command holds) and the other
/// nodes are asked for their view, as the daemon would.
async fn standalone(config: &Config, names: &[String]) -> Result<Vec<Finding>, Failure> {
    let certs = config.selected(names).map_err(|unknown| Failure {
        code: EX_CONFIG,
        message: unknown.to_string(),
    })?;
    let cluster = match &config.cluster {
        Some(settings) => clustered(settings).await,
        None => None,
    };
    let preflight = Preflight::new(config).map_err(Failure::new)?.with_peers(
        cluster
            .clone()
            .map(|c| std::sync::Arc::new(c) as std::sync::Arc<dyn crate::preflight::Peers>),
    );
    let tokens = match &cluster {
        Some(cluster) => Tokens::shared(cluster.shared_answers()),
        None => Tokens::default(),
    };
    let listener = http01::bind(config.daemon.listen).map_err(check::NoListener::Bind);
    let (server, served) = match listener {
        Ok(listener) => (
            Some(tokio::spawn(http01::serve(
                listener,
                tokens.clone(),
                None,
                std::future::pending(),
            ))),
            Ok(&tokens),
        ),
        Err(why) => (None, Err(why)),
    };
    let progress = |index, total, name: &str| {
        if total > 1 && std::io::stderr().is_terminal() {
            eprintln!("[{index}/{total}] checking {name}");
        }
    };
    let tls_alpn01 = TlsAlpn01::new(config.daemon.tls_alpn_listen);
    let findings = check::findings(config, &certs, &preflight, served, &tls_alpn01, progress).await;
    if let Some(server) = server {
        server.abort();
    }
    if let Some(cluster) = cluster {
        cluster.release().await;
    }
    Ok(findings)
}

/// The cluster, holding a lease for what this command stores in etcd; none when etcd cannot
/// be asked (the check's `cluster` row says why).
async fn clustered(settings: &crate::config::ClusterConfig) -> Option<Cluster> {
    let cluster = Cluster::new(settings).ok()?;
    cluster.hold(Duration::from_secs(60)).await.ok()?;
    Some(cluster)
}

fn print_table(findings: &[Finding], outlook: check::Outlook) {
    let rows: Vec<[String; 5]> = findings
        .iter()
        .map(|f| {
            [
                f.severity.mark().to_string(),
                f.name.clone().unwrap_or_else(|| "-".into()),
                f.address.map_or("-".into(), |a| a.to_string()),
                f.check.as_str().to_string(),
                f.message.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::cli::table::render(["RESULT", "NAME", "ADDRESS", "CHECK", "FINDING"], &rows)
    );
    let checked = |wanted: &[Check]| findings.iter().any(|f| wanted.contains(&f.check));
    if checked(&[Check::Dns, Check::Address, Check::Port, Check::Reachability]) {
        println!(
            "{}",
            if outlook.http01_ok {
                "http-01 can succeed for every name"
            } else {
                "http-01 cannot succeed for every name: fix the FAIL lines, or configure [dns01] (challenge = \"auto\" then uses dns-01), or set the dns-persist-01 record (one TXT record set once, no open port, no DNS credentials: certkeeper persist-record NAME prints it; challenge = \"auto\" then uses it)"
            }
        );
    }
    if checked(&[Check::TlsAlpn]) {
        println!(
            "{}",
            if outlook.tls_alpn_ok {
                "tls-alpn-01 can succeed for every name configured for it"
            } else {
                "tls-alpn-01 cannot succeed for every name configured for it: fix the FAIL lines marked tls-alpn"
            }
        );
    }
    if !outlook.persist_ok {
        println!(
            "a dns-persist-01 record would not prove control: set the record the FAIL lines marked dns-persist give"
        );
    }
    if !outlook.served_ok {
        println!(
            "a server does not serve the certificate certkeeper deployed: fix the FAIL lines marked served"
        );
    }
    if !outlook.clock_ok {
        println!(
            "no renewal can be deployed with this host's clock: fix the FAIL line marked clock"
        );
    }
}
