//! Runs the configured reload command after a swap, bounded in time, with the certificate's
//! name, domains and file paths in its environment (and nothing secret).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::config::CertificateConfig;
use crate::store::FileKind;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload command `{command}` could not start: {source}")]
    Start {
        command: String,
        source: std::io::Error,
    },
    #[error("reload command `{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("reload command `{command}` did not finish within {}s and was killed", timeout.as_secs())]
    Timeout { command: String, timeout: Duration },
}

/// Runs `cert.reload` (if any) through `sh -c`, with `current_dir` the installed version.
pub async fn run(cert: &CertificateConfig, current_dir: &Path) -> Result<(), ReloadError> {
    let Some(command) = &cert.reload else {
        return Ok(());
    };
    let domains: Vec<&str> = cert.domains.iter().map(|d| d.as_str()).collect();
    let mut child = Command::new("/bin/sh");
    child
        .arg("-c")
        .arg(command)
        .env("CERTKEEPER_NAME", &cert.name)
        .env("CERTKEEPER_DOMAINS", domains.join(" "))
        .env("CERTKEEPER_DIR", current_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for kind in FileKind::ALL {
        let var = format!(
            "CERTKEEPER_{}",
            kind.file_name().trim_end_matches(".pem").to_uppercase()
        );
        child.env(var, current_dir.join(kind.file_name()));
    }
    let mut child = child.spawn().map_err(|source| ReloadError::Start {
        command: command.clone(),
        source,
    })?;
    let mut stderr = child.stderr.take();
    let finished = async {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            // Bounded: a chatty command must not fill our memory.
            let _ = stderr.take(4096).read_to_string(&mut text).await;
        }
        (child.wait().await, text)
    };
    match tokio::time::timeout(cert.reload_timeout, finished).await {
        Err(_) => Err(ReloadError::Timeout {
            command: command.clone(),
            timeout: cert.reload_timeout,
        }),
        Ok((Err(source), _)) => Err(ReloadError::Start {
            command: command.clone(),
            source,
        }),
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), stderr)) => Err(ReloadError::Failed {
            command: command.clone(),
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        }),
    }
}
