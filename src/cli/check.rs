//! `certkeeper check`: the pre-flight through the running daemon (its listener serves the
//! probe), or through the engine run once for it, with a listener of its own (and, in cluster
//! mode, the other nodes' view); printed as a table or JSON.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::{Failure, ended, run_once, running_daemon};
use crate::config::Config;
use crate::daemon::check;
use crate::daemon::control::{Reply, Request};
use crate::preflight::{Check, Finding};

pub(super) async fn run(
    config_path: PathBuf,
    config: Config,
    json: bool,
    names: Vec<String>,
) -> Result<(), Failure> {
    let request = Request::Check { names };
    let mut findings = Vec::new();
    let take = |reply| match reply {
        Reply::Findings(found) => findings = found,
        Reply::Line(line) if std::io::stderr().is_terminal() => eprintln!("{line}"),
        _ => {}
    };
    let (code, message) = match running_daemon(&config).await? {
        Some(daemon) => daemon.call(&request, take).await.map_err(Failure::new)?,
        // No daemon: the engine runs once for this check, with a listener of its own (and, in
        // cluster mode, the other nodes' view).
        None => run_once(config_path, config, request, take).await?,
    };
    ended(code, message)?;
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
