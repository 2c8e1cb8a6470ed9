//! The control socket: how `renew`, `check` and `status` reach a running daemon.
//!
//! A line protocol over a Unix socket, one request per connection: the client writes one JSON
//! line (a [`Request`]), the daemon answers with JSON lines (each a [`Reply`]), the last one
//! [`Reply::Done`]. A connection that ends before `Done` means the daemon went away. Access is
//! the socket's mode (0660) and the peer's credentials (root, or the daemon's user or group).
//!
//! The server side only carries requests to the daemon's loop ([`Call`]); what a request does
//! is the daemon's business.

pub mod client;
mod renewal;
pub mod server;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use crate::acme::KeyPem;
pub use renewal::{ChallengeUsed, Deferral, Renewal, RenewalResult, RevocationResult};

use crate::daemon::status::Row;
use crate::preflight::Finding;

/// The longest request line the daemon reads.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Renew {
        force: bool,
        dry_run: bool,
        /// Certificate names; empty: all.
        names: Vec<String>,
    },
    Check {
        names: Vec<String>,
    },
    Status,
    /// Revoke the current certificate of `name` and replace it at once.
    Revoke {
        name: String,
        reason: crate::acme::RevokeReason,
        /// Sign with the certificate's own key instead of the account key: the key itself,
        /// read by the client with the client's rights (the daemon opens no path it is sent).
        #[serde(default)]
        key_pem: Option<KeyPem>,
    },
    /// Show, roll over or deactivate the ACME account at the preferred CA.
    Account {
        action: AccountAction,
    },
    /// Re-read the config file (as SIGHUP does) and answer whether it was taken.
    Reload,
}

/// One request line as a client sent it (the daemon's parser; a fuzz target drives it).
pub fn parse_request(line: &str) -> Result<Request, RequestError> {
    serde_json::from_str(line).map_err(RequestError::NotARequest)
}

/// A request the daemon could not take; its text is what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot read the request: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a certkeeper request: {0}")]
    NotARequest(#[source] serde_json::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AccountAction {
    /// The account's URL, its CA, its key file and the key's age.
    Show,
    /// A new account key, signed over by the old one (RFC 8555 §7.3.5).
    Rollover,
    /// Close the account at the CA for good (RFC 8555 §7.3.6).
    Deactivate,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// A line for the operator (a certificate's outcome, a note).
    Line(String),
    /// How far a long command has come.
    Progress {
        done: usize,
        total: usize,
    },
    Status(Live),
    Findings(Vec<Finding>),
    /// How one certificate's renewal ended.
    Renewal(Renewal),
    /// The end of the answer, with the command's exit code and, on failure, why.
    Done {
        code: u8,
        message: Option<String>,
    },
}

impl Reply {
    pub fn ok() -> Self {
        Reply::Done {
            code: 0,
            message: None,
        }
    }

    pub fn failed(code: u8, message: impl ToString) -> Self {
        Reply::Done {
            code,
            message: Some(message.to_string()),
        }
    }
}

/// `status` as the running daemon sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Live {
    pub pid: u32,
    /// Each certificate, with `renewing` set on those being renewed now.
    pub rows: Vec<Row>,
    /// When the daemon next wakes up to renew, if anything is planned.
    pub next_wakeup: Option<String>,
}

/// A request on its way to the daemon's loop, with where its answer goes.
pub struct Call {
    pub request: Request,
    pub replies: Replies,
}

/// Where a request's answer lines go. Lines are few (one or two per certificate); a client
/// that stops reading only loses its own lines.
#[derive(Clone)]
pub struct Replies(mpsc::Sender<Reply>);

impl Replies {
    pub fn channel() -> (Replies, mpsc::Receiver<Reply>) {
        let (sender, receiver) = mpsc::channel(1024);
        (Replies(sender), receiver)
    }

    pub fn send(&self, reply: Reply) {
        if self.0.try_send(reply).is_err() {
            tracing::debug!("a control client stopped reading its answer");
        }
    }

    pub fn line(&self, line: impl Into<String>) {
        self.send(Reply::Line(line.into()));
    }
}

/// Writes `value` as one JSON line.
async fn write_line(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    value: &impl Serialize,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await
}
