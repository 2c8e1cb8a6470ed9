//! Reloading a server through systemd without any privilege: `reload_unit`.
//!
//! Run as root, certkeeper calls `systemctl` itself. Run by the shipped unit (an unprivileged
//! user with no capability but port 80), it may neither signal another user's process nor
//! manage units, so it asks: it writes the action to `RUNTIME_DIR/reload/UNIT`, the package's
//! `certkeeper-reload@UNIT.path` (enabled by the operator, one per unit) starts the root oneshot
//! `certkeeper-reload@UNIT.service`, which runs `certkeeper unit-action UNIT`: it reads the
//! action, checks it against the few that exist, runs `systemctl` on that unit alone and writes
//! the verdict to `UNIT.result`, which certkeeper waits for. certkeeper can thus reload,
//! restart or signal the units the operator enabled a trigger for, and nothing else.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::UnitAction;
use crate::deploy::store::{FileMode, SafeDir, StoreError};

/// What certkeeper asks for: `nonce` ties the verdict to this request.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Ask {
    pub nonce: String,
    pub action: UnitAction,
}

/// What the root side answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Verdict {
    pub nonce: String,
    pub ok: bool,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("cannot ask for the reload of {unit} through {path}: {reason}")]
    Ask {
        unit: String,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "nothing carried out the reload of {unit} within {}s: enable its trigger as root \
         (systemctl enable --now certkeeper-reload@{unit}.path; see docs/servers/)",
        timeout.as_secs()
    )]
    Unanswered { unit: String, timeout: Duration },
    #[error("systemctl {action} {unit} failed: {message}")]
    Failed {
        unit: String,
        action: String,
        message: String,
    },
}

/// Where requests and verdicts live: `reload/` in the service's runtime directory
/// (`RuntimeDirectory=`, `/run/certkeeper`), which the path units watch.
pub fn trigger_dir() -> PathBuf {
    let runtime = std::env::var_os("RUNTIME_DIRECTORY").and_then(|dirs| {
        // Several directories are separated by ':'; the first is certkeeper's own.
        dirs.to_str()
            .and_then(|d| d.split(':').next())
            .map(PathBuf::from)
    });
    runtime
        .unwrap_or_else(|| PathBuf::from(RUNTIME_DIR))
        .join("reload")
}

/// The signals the root side sends on request.
const RELOAD_SIGNALS: [&str; 3] = ["HUP", "USR1", "USR2"];

/// The packaged runtime directory.
pub const RUNTIME_DIR: &str = "/run/certkeeper";

/// The `systemctl` arguments for `action` on `unit`.
pub fn systemctl_args(action: &UnitAction, unit: &str) -> Vec<String> {
    let mut args: Vec<String> = match action {
        UnitAction::Reload => vec!["reload".into()],
        UnitAction::Restart => vec!["restart".into()],
        UnitAction::ReloadOrRestart => vec!["reload-or-restart".into()],
        UnitAction::Signal(signal) => vec![
            "kill".into(),
            "--kill-whom=main".into(),
            format!("--signal=SIG{signal}"),
        ],
    };
    args.extend(["--".into(), unit.into()]);
    args
}

/// Asks the root side to carry out `action` on `unit` and waits (bounded by `timeout`) for
/// its verdict.
pub async fn ask(
    dir: &Path,
    unit: &str,
    action: &UnitAction,
    timeout: Duration,
) -> Result<(), UnitError> {
    let request = Ask {
        nonce: format!("{:016x}", fastrand::u64(..)),
        action: action.clone(),
    };
    let cannot = |reason: String| UnitError::Ask {
        unit: unit.to_string(),
        path: dir.join(unit),
        reason,
    };
    let json = serde_json::to_vec(&request).map_err(|e| cannot(e.to_string()))?;
    let opened = SafeDir::open(dir, true).map_err(|e| cannot(e.to_string()))?;
    // An old verdict must not answer this request.
    let _ = opened.remove(&result_name(unit));
    opened
        .write_atomic(unit, &json, FileMode::PUBLIC)
        .map_err(|e| cannot(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(bytes) = opened.read_regular(&result_name(unit)) else {
            continue;
        };
        let Ok(verdict) = serde_json::from_slice::<Verdict>(&bytes) else {
            continue;
        };
        if verdict.nonce != request.nonce {
            continue;
        }
        return match verdict.ok {
            true => Ok(()),
            false => Err(UnitError::Failed {
                unit: unit.to_string(),
                action: systemctl_args(action, unit).join(" "),
                message: verdict.message,
            }),
        };
    }
    Err(UnitError::Unanswered {
        unit: unit.to_string(),
        timeout,
    })
}

pub fn result_name(unit: &str) -> String {
    format!("{unit}.result")
}

/// Why `certkeeper unit-action` carried nothing out, or what systemctl said.
#[derive(Debug, thiserror::Error)]
pub enum UnitActionError {
    #[error("\"{0}\" is not a unit name")]
    NotAUnit(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no request in {}", .0.display())]
    NoRequest(PathBuf),
    #[error("unreadable request: {0}")]
    Unreadable(#[source] serde_json::Error),
    #[error("unreadable request: a bad nonce")]
    BadNonce,
    #[error("refused: SIG{0} is not a reload signal")]
    NotAReloadSignal(String),
    #[error("cannot write the verdict: {0}")]
    Verdict(#[source] serde_json::Error),
    #[error("systemctl {args}: {message}")]
    Systemctl { args: String, message: String },
}

/// `certkeeper unit-action UNIT`, run as root by `certkeeper-reload@UNIT.service`: carries out
/// the action asked for in `dir/UNIT` on that unit alone and writes the verdict beside it.
pub fn carry_out(dir: &Path, unit: &str) -> Result<(), UnitActionError> {
    if !crate::config::is_unit_name(unit) {
        return Err(UnitActionError::NotAUnit(unit.to_string()));
    }
    let opened = SafeDir::open(dir, false)?;
    let bytes = opened
        .read_regular(unit)
        .ok_or_else(|| UnitActionError::NoRequest(dir.join(unit)))?;
    let request: Ask = serde_json::from_slice(&bytes).map_err(UnitActionError::Unreadable)?;
    if !request.nonce.bytes().all(|b| b.is_ascii_hexdigit()) || request.nonce.len() > 32 {
        return Err(UnitActionError::BadNonce);
    }
    // The request comes from an unprivileged user: only the reload signals, never one that
    // stops the server.
    if let UnitAction::Signal(signal) = &request.action
        && !RELOAD_SIGNALS.contains(&signal.as_str())
    {
        return Err(UnitActionError::NotAReloadSignal(signal.clone()));
    }
    let args = systemctl_args(&request.action, unit);
    let ran = std::process::Command::new("systemctl")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output();
    let (ok, message) = match ran {
        Ok(output) if output.status.success() => (true, "done".to_string()),
        Ok(output) => (
            false,
            format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ),
        Err(e) => (false, format!("cannot run systemctl: {e}")),
    };
    let verdict = Verdict {
        nonce: request.nonce,
        ok,
        message: message.clone(),
    };
    let json = serde_json::to_vec(&verdict).map_err(UnitActionError::Verdict)?;
    opened.write_atomic(&result_name(unit), &json, FileMode::PUBLIC)?;
    match ok {
        true => Ok(()),
        false => Err(UnitActionError::Systemctl {
            args: args.join(" "),
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_become_systemctl_arguments_on_that_unit_alone() {
        assert_eq!(
            systemctl_args(&UnitAction::Reload, "nginx.service").join(" "),
            "reload -- nginx.service"
        );
        assert_eq!(
            systemctl_args(&UnitAction::Signal("USR2".into()), "coturn.service").join(" "),
            "kill --kill-whom=main --signal=SIGUSR2 -- coturn.service"
        );
    }

    #[test]
    fn the_root_side_sends_reload_signals_only() {
        let dir = tempfile::tempdir().unwrap();
        let ask = Ask {
            nonce: "ab12".into(),
            action: UnitAction::Signal("KILL".into()),
        };
        std::fs::write(
            dir.path().join("nginx.service"),
            serde_json::to_vec(&ask).unwrap(),
        )
        .unwrap();
        let err = carry_out(dir.path(), "nginx.service").unwrap_err();
        assert!(err.to_string().contains("not a reload signal"), "{err}");
        assert!(carry_out(dir.path(), "--all").is_err());
    }

    #[tokio::test]
    async fn an_answer_to_another_request_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let stale = Verdict {
            nonce: "0".into(),
            ok: true,
            message: "done".into(),
        };
        let opened = SafeDir::open(dir.path(), false).unwrap();
        opened
            .write_atomic(
                &result_name("nginx.service"),
                &serde_json::to_vec(&stale).unwrap(),
                FileMode::PUBLIC,
            )
            .unwrap();
        let err = ask(
            dir.path(),
            "nginx.service",
            &UnitAction::Reload,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("certkeeper-reload@nginx.service.path"),
            "{err}"
        );
        // The request is there for the root side to read.
        let asked: Ask =
            serde_json::from_slice(&std::fs::read(dir.path().join("nginx.service")).unwrap())
                .unwrap();
        assert_eq!(asked.action, UnitAction::Reload);
    }
}
