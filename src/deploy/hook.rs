//! Running an operator's command (reload, DNS hook, notification): no inherited stdin unless
//! given, stdout discarded, at most 4 KiB of stderr kept for the error message, killed when it
//! outlives its time. Its environment is what the caller gives it (the documented
//! `CERTKEEPER_*` variables) plus [`INHERITED`]: nothing else of the daemon's environment (a
//! credential passed to certkeeper through it, say) reaches a hook.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// What a command inherits of certkeeper's own environment: where programs are, and the locale.
pub const INHERITED: [&str; 5] = ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];

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
    let given: Vec<(std::ffi::OsString, std::ffi::OsString)> = command
        .as_std()
        .get_envs()
        .filter_map(|(key, value)| Some((key.to_owned(), value?.to_owned())))
        .collect();
    command.env_clear();
    for key in INHERITED {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command.envs(given);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hook_gets_what_it_is_given_and_nothing_else() {
        // SAFETY of the test: no other test reads this variable.
        unsafe { std::env::set_var("CERTKEEPER_TEST_SECRET", "hunter2") };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(format!("env > {}", out.display()))
            .env("CERTKEEPER_NAME", "media");
        let (status, _) = run(command, None, Duration::from_secs(10)).await.unwrap();
        assert!(status.success());
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("CERTKEEPER_NAME=media"), "{env}");
        assert!(!env.contains("hunter2"), "{env}");
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    }
}
