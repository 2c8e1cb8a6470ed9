//! Tells the server to load the new certificate: a shell command, a signal to the PID in a
//! pidfile, or `systemctl reload UNIT`. Bounded in time; commands get the certificate's name,
//! domains and file paths in their environment (and nothing secret).

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use crate::config::{CertificateConfig, Reload};
use crate::deploy::hook::{self, HookError};
use crate::deploy::store::FileKind;

pub mod unit;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Unit(unit::UnitError),
    #[error("reload `{command}` could not start: {source}")]
    Start {
        command: String,
        source: std::io::Error,
    },
    #[error("reload `{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("reload `{command}` did not finish within {}s and was killed", timeout.as_secs())]
    Timeout { command: String, timeout: Duration },
    #[error("cannot read a PID from reload_pidfile {path}: {source}; is the server running?")]
    Pidfile {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "cannot read a PID from reload_pidfile {path}: \"{text}\" is not a process id; is the \
         server running?"
    )]
    NotAPid { path: String, text: String },
    #[error("cannot send SIG{signal} to PID {pid} (from {pidfile}): {reason}")]
    Signal {
        signal: String,
        pid: i32,
        pidfile: String,
        reason: String,
    },
}

/// Runs the configured reload, with `dir` the version directory now in use.
pub async fn run(cert: &CertificateConfig, dir: &Path) -> Result<(), ReloadError> {
    match &cert.reload {
        Reload::None => Ok(()),
        Reload::Command(command) => {
            let mut child = Command::new("/bin/sh");
            child.arg("-c").arg(command);
            run_command(child, command, cert, dir).await
        }
        Reload::Unit { unit, action } if nix::unistd::geteuid().is_root() => {
            let args = unit::systemctl_args(action, unit);
            let mut child = Command::new("systemctl");
            child.args(&args);
            run_command(child, &format!("systemctl {}", args.join(" ")), cert, dir).await
        }
        Reload::Unit { unit, action } => {
            let dir = unit::trigger_dir();
            unit::ask(&dir, unit, action, cert.reload_timeout)
                .await
                .map_err(ReloadError::Unit)
        }
        Reload::Signal { pidfile, signal } => send_signal(pidfile, signal),
    }
}

async fn run_command(
    mut child: Command,
    shown: &str,
    cert: &CertificateConfig,
    dir: &Path,
) -> Result<(), ReloadError> {
    let domains: Vec<&str> = cert.domains.iter().map(|d| d.as_str()).collect();
    child
        .env("CERTKEEPER_NAME", &cert.name)
        .env("CERTKEEPER_DOMAINS", domains.join(" "))
        .env("CERTKEEPER_DIR", dir);
    for kind in FileKind::ALL {
        let var = kind.file_name().replace(['.', '-'], "_").to_uppercase();
        let var = format!("CERTKEEPER_{}", var.trim_end_matches("_PEM"));
        child.env(var, dir.join(kind.file_name()));
    }
    match hook::run(child, None, cert.reload_timeout).await {
        Ok((status, _)) if status.success() => Ok(()),
        Ok((status, stderr)) => Err(ReloadError::Failed {
            command: shown.to_string(),
            status: status.to_string(),
            stderr,
        }),
        Err(HookError::Timeout) => Err(ReloadError::Timeout {
            command: shown.to_string(),
            timeout: cert.reload_timeout,
        }),
        Err(HookError::Start(source)) => Err(ReloadError::Start {
            command: shown.to_string(),
            source,
        }),
    }
}
fn send_signal(pidfile: &Path, signal: &str) -> Result<(), ReloadError> {
    let path = || pidfile.display().to_string();
    let text = crate::deploy::store::read_regular_file(pidfile)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|source| ReloadError::Pidfile {
            path: path(),
            source,
        })?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|pid| *pid > 1)
        .ok_or_else(|| ReloadError::NotAPid {
            path: path(),
            text: text.trim().to_string(),
        })?;
    let parsed: nix::sys::signal::Signal =
        format!("SIG{signal}")
            .parse()
            .map_err(|_| ReloadError::Signal {
                signal: signal.to_string(),
                pid,
                pidfile: pidfile.display().to_string(),
                reason: "unknown signal".into(),
            })?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), parsed).map_err(|e| {
        ReloadError::Signal {
            signal: signal.to_string(),
            pid,
            pidfile: pidfile.display().to_string(),
            reason: match e {
                nix::errno::Errno::EPERM => "not permitted: certkeeper may not signal another \
                    user's process (the systemd unit grants no CAP_KILL); use reload_unit with \
                    reload_signal and enable certkeeper-reload@UNIT.path (docs/servers/README.md)"
                    .to_string(),
                e => e.desc().to_string(),
            },
        }
    })
}
