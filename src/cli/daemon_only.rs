//! Commands answered by the running daemon alone, with no valid config file at hand:
//! `certkeeper reload` (the unit's `ExecReload=`: the daemon re-reads the file and says whether
//! it took it, so `systemctl reload` fails on a broken config), and `status` and `renew` while
//! the file is broken (the daemon still runs on the previous config and can be asked).

use std::path::Path;
use std::process::ExitCode;

use super::{Command, Failure, ended, runtime};
use crate::config::{ConfigError, EX_CONFIG};
use crate::daemon::control::client;
use crate::daemon::control::{Reply, Request};

/// `certkeeper reload`.
pub(super) fn reload(config_path: &Path) -> ExitCode {
    finish(ask(config_path, Request::Reload, None, false))
}

/// `command` when the config file cannot be used (`error`): through the running daemon if one
/// answers, else the config error as always (exit 78).
pub(super) fn with_broken_config(
    config_path: &Path,
    command: &Command,
    error: &ConfigError,
) -> ExitCode {
    let request = match command {
        Command::Status { .. } => Request::Status,
        Command::Renew {
            force,
            dry_run,
            names,
            ..
        } => Request::Renew {
            force: *force,
            dry_run: *dry_run,
            names: names.clone(),
        },
        _ => {
            eprintln!("certkeeper: {error}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let status = match command {
        Command::Status { json } => Some(*json),
        _ => None,
    };
    let json = matches!(command, Command::Renew { json: true, .. });
    eprintln!("certkeeper: {error}");
    finish(
        ask(config_path, request, status, json).map_err(|failure| match failure.code {
            // No daemon to ask: the broken file is the answer.
            NO_DAEMON => Failure {
                code: EX_CONFIG,
                message: "no daemon answers either; fix the config file".into(),
            },
            _ => failure,
        }),
    )
}

/// The exit code when no daemon answers.
const NO_DAEMON: u8 = 69;

/// Sends `request` to the daemon the config file names (read leniently); prints its answers
/// (renewals as JSON with `json`), and its status rows when `status` is `Some(json)`.
fn ask(
    config_path: &Path,
    request: Request,
    status: Option<bool>,
    json: bool,
) -> Result<(), Failure> {
    let mut printer = super::renew::Printer::new(json);
    let socket = crate::config::control_socket_of(config_path);
    let runtime = runtime().map_err(Failure::new)?;
    let answer = runtime.block_on(async {
        let daemon = client::connect(&socket).await.map_err(Failure::reaching)?;
        let Some(daemon) = daemon else {
            return Err(Failure {
                code: NO_DAEMON,
                message: format!(
                    "no daemon answers on {}; is certkeeper running? (systemctl status certkeeper)",
                    socket.display()
                ),
            });
        };
        if status.is_some() {
            eprintln!(
                "certkeeper: the running daemon's view (it keeps its previous configuration):"
            );
        }
        let (code, message) = daemon
            .call(&request, |reply| match reply {
                Reply::Status(live) => match status {
                    Some(true) => println!(
                        "{}",
                        serde_json::to_string_pretty(&live.rows).unwrap_or_default()
                    ),
                    _ => print!("{}", super::status::table(&live.rows)),
                },
                other => printer.print(other),
            })
            .await
            .map_err(Failure::new)?;
        printer.finish();
        ended(code, message)
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    answer
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("certkeeper: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
