//! The command line's end of the control socket: finds out whether a daemon answers, sends
//! one request and hands each answer line to the caller as it comes.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;

use super::{Reply, Request};

/// How long connecting may take before the daemon counts as not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the daemon's control socket {0} refused this user: run the command as root, or as the service's user or group"
    )]
    PermissionDenied(PathBuf),
    #[error("cannot reach the daemon's control socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the daemon went away before it finished answering (did it stop or crash? see its log, e.g. journalctl -u certkeeper)"
    )]
    Lost,
    #[error(
        "the daemon's answer is not understood: {0}; are certkeeper and the running daemon the same version?"
    )]
    Garbled(String),
}

/// A connection to a running daemon.
pub struct Daemon {
    stream: UnixStream,
}

/// Connects to the daemon at `path`; `None` when no daemon runs there.
pub async fn connect(path: &Path) -> Result<Option<Daemon>, ClientError> {
    let connecting = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path)).await;
    match connecting {
        Ok(Ok(stream)) => Ok(Some(Daemon { stream })),
        Ok(Err(e)) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            Ok(None)
        }
        Ok(Err(e)) if e.kind() == ErrorKind::PermissionDenied => {
            Err(ClientError::PermissionDenied(path.to_path_buf()))
        }
        Ok(Err(source)) => Err(ClientError::Connect {
            path: path.to_path_buf(),
            source,
        }),
        Err(_) => Err(ClientError::Connect {
            path: path.to_path_buf(),
            source: std::io::Error::new(ErrorKind::TimedOut, "no answer within 3 s"),
        }),
    }
}

impl Daemon {
    /// Sends `request` and passes every answer to `on_reply` up to the final `Done`, whose
    /// exit code and message are returned.
    pub async fn call(
        mut self,
        request: &Request,
        mut on_reply: impl FnMut(Reply),
    ) -> Result<(u8, Option<String>), ClientError> {
        let (reader, mut writer) = self.stream.split();
        // A daemon that refuses this user answers before reading: its answer is still there
        // to read when the write fails.
        let _ = super::write_line(&mut writer, request).await;
        let mut lines = BufReader::new(reader).lines();
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) | Err(_) => return Err(ClientError::Lost),
            };
            match serde_json::from_str::<Reply>(&line) {
                Ok(Reply::Done { code, message }) => return Ok((code, message)),
                Ok(reply) => on_reply(reply),
                Err(e) => return Err(ClientError::Garbled(e.to_string())),
            }
        }
    }
}
