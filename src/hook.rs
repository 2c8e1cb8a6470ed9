//! Running an operator's command (reload, DNS hook, notification): no inherited stdin unless
//! given, stdout discarded, at most 4 KiB of stderr kept for the error message, killed when it
//! outlives its time.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// How much of a command's stderr is kept: enough to explain, not enough to fill memory.
const STDERR_LIMIT: u64 = 4096;

#[derive(Debug)]
pub enum HookError {
    Start(std::io::Error),
    Timeout,
}

/// Runs `command` to completion within `timeout`, feeding it `stdin` if given. Returns its
/// exit status and (the start of) its stderr.
pub async fn run(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<(ExitStatus, String), HookError> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(HookError::Start)?;
    let (mut input, mut stderr) = (child.stdin.take(), child.stderr.take());
    let finished = async {
        if let (Some(input), Some(bytes)) = (input.as_mut(), stdin) {
            // A command that does not read its input is no failure of ours.
            let _ = input.write_all(bytes).await;
        }
        drop(input);
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.take(STDERR_LIMIT).read_to_string(&mut text).await;
        }
        (child.wait().await, text)
    };
    match tokio::time::timeout(timeout, finished).await {
        Err(_) => Err(HookError::Timeout),
        Ok((Err(e), _)) => Err(HookError::Start(e)),
        Ok((Ok(status), stderr)) => Ok((status, stderr.trim().to_string())),
    }
}
