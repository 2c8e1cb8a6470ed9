//! `certkeeper renew`, `revoke` and `account`: ask the running daemon, or run the renewal
//! engine once when no daemon runs; print each outcome as it comes.

use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Failure, ended, running_daemon, show_progress};
use crate::config::Config;
use crate::control::{Replies, Reply, Request};
use crate::daemon;

pub(super) async fn run(
    config_path: PathBuf,
    config: Config,
    request: Request,
) -> Result<(), Failure> {
    if let Some(daemon) = running_daemon(&config).await? {
        let (code, message) = daemon.call(&request, print).await.map_err(Failure::new)?;
        return ended(code, message);
    }
    let (replies, answers) = Replies::channel();
    let printer = print_all(answers);
    daemon::once(config_path, config, request, replies)
        .await
        .map_err(Failure::new)?;
    let (code, message) = printer
        .await
        .unwrap_or((1, Some("the renewal engine failed".into())));
    ended(code, message)
}

fn print(reply: Reply) {
    match reply {
        Reply::Line(line) => println!("{line}"),
        Reply::Progress { done, total } => show_progress(done, total),
        Reply::Status(_) | Reply::Findings(_) | Reply::Done { .. } => {}
    }
}

/// Prints the standalone engine's answers as they come, as a daemon's would be.
fn print_all(mut answers: mpsc::Receiver<Reply>) -> JoinHandle<(u8, Option<String>)> {
    tokio::spawn(async move {
        while let Some(reply) = answers.recv().await {
            match reply {
                Reply::Done { code, message } => return (code, message),
                other => print(other),
            }
        }
        (1, Some("the renewal engine ended without an answer".into()))
    })
}
