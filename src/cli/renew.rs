//! `certkeeper renew`, `revoke` and `account`: ask the running daemon, or run the renewal
//! engine once when no daemon runs; print each outcome as it comes.

use std::path::PathBuf;

use super::{Failure, ended, run_once, running_daemon, show_progress};
use crate::config::Config;
use crate::daemon::control::{Deferral, Renewal, RenewalResult, Reply, Request, RevocationResult};
use crate::timefmt;

/// Asks the running daemon, or runs the engine once; prints each certificate's outcome as it
/// comes, or with `json` all of them at the end as one JSON list (notes go to stderr then).
pub(super) async fn run(
    config_path: PathBuf,
    config: Config,
    request: Request,
    json: bool,
) -> Result<(), Failure> {
    let mut printer = Printer::new(json);
    let (code, message) = match running_daemon(&config).await? {
        Some(daemon) => daemon
            .call(&request, |reply| printer.print(reply))
            .await
            .map_err(Failure::new)?,
        None => run_once(config_path, config, request, |reply| printer.print(reply)).await?,
    };
    printer.finish();
    ended(code, message)
}

/// Prints a renewal request's answers: lines as they come, or the outcomes as JSON at the end.
pub(super) struct Printer {
    json: bool,
    renewals: Vec<Renewal>,
}

impl Printer {
    pub(super) fn new(json: bool) -> Self {
        Printer {
            json,
            renewals: Vec::new(),
        }
    }

    /// With JSON, the outcomes collected, as one list.
    pub(super) fn finish(&self) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.renewals).unwrap_or_default()
            );
        }
    }

    pub(super) fn print(&mut self, reply: Reply) {
        match reply {
            Reply::Line(line) if self.json => eprintln!("{line}"),
            Reply::Line(line) => println!("{line}"),
            Reply::Renewal(renewal) if self.json => self.renewals.push(renewal),
            Reply::Renewal(renewal) => worded(&renewal).iter().for_each(|l| println!("{l}")),
            Reply::Progress { done, total } => show_progress(done, total),
            Reply::Status(_) | Reply::Findings(_) | Reply::Done { .. } => {}
        }
    }
}

/// A renewal's outcome in words: the challenge line (when an order ran), then the result.
fn worded(renewal: &Renewal) -> Vec<String> {
    let name = &renewal.name;
    let mut lines = Vec::new();
    if let Some(challenge) = &renewal.challenge {
        lines.push(format!(
            "{name}: {} ({})",
            challenge.method, challenge.reason
        ));
    }
    let mut line = match &renewal.result {
        RenewalResult::DryRunOk { names, not_after } => format!(
            "dry run ok: the CA issued a certificate for {} valid until {}; it passed every check",
            names.join(", "),
            timefmt::utc(*not_after)
        ),
        RenewalResult::Renewed { not_after, version } => format!(
            "renewed, valid until {}{}",
            timefmt::utc(*not_after),
            version
                .as_ref()
                .map_or(String::new(), |v| format!(" ({})", v.display()))
        ),
        RenewalResult::Deferred(Deferral::Stopping) => {
            "NOT RENEWED: certkeeper is stopping".to_string()
        }
        RenewalResult::Deferred(Deferral::Abandoned) => "NOT RENEWED: the order was abandoned \
            (certkeeper is stopping, or lost the renewal lease)"
            .to_string(),
        RenewalResult::Deferred(Deferral::RateLimited { reason, .. }) => {
            format!("NOT RENEWED: {reason}; raise [acme.limits] if the CA allows more")
        }
        RenewalResult::Failed { error, .. } => format!("FAILED: {error}"),
    };
    match &renewal.revocation {
        Some(RevocationResult::Revoked { serial, reason }) => {
            line.push_str(&format!("; revoked serial {serial} ({reason})"));
        }
        Some(RevocationResult::Failed {
            serial: Some(serial),
            error,
        }) => line.push_str(&format!("; NOT REVOKED (serial {serial}): {error}")),
        Some(RevocationResult::Failed {
            serial: None,
            error,
        }) => {
            line.push_str(&format!("; NOT REVOKED: {error}"));
        }
        None => {}
    }
    lines.push(format!("{name}: {line}"));
    lines
}
