//! Asking a probe server (`certkeeper probe-server`, run elsewhere) to fetch this host's probe
//! token from outside, as the CA would: the one view a host behind a NAT cannot have of itself.
//!
//! `GET {server}/probe?name=NAME&token=TOKEN&expected=VALUE` with `Authorization: Bearer
//! SECRET` (a cluster node asks another node the same, signed: see `cluster::peers`); the
//! answer is a JSON list of findings, one per address the server resolved.

pub mod server;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

use crate::net::web::WebClient;
use crate::preflight::Finding;

/// How long a probe server may take for `check` (it fetches each address with its own time
/// limits); the pre-flight before an order allows less.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// The probe request to a probe server: its URL and `Authorization` value.
pub fn request_to(
    server: &str,
    secret: &str,
    name: &str,
    token: &str,
    expected: &str,
) -> (String, String) {
    (
        format!("{server}/probe?name={name}&token={token}&expected={expected}"),
        format!("Bearer {secret}"),
    )
}

/// Why a probe server (or another node) could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("cannot build the request: {0}")]
    Request(#[source] http::Error),
    #[error("{}", crate::net::web::chain(.0))]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("{0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("its answer is not a list of findings: {0}")]
    NotFindings(#[source] serde_json::Error),
    #[error("it answered HTTP {}: {body}", status.as_u16())]
    Status {
        status: http::StatusCode,
        body: String,
    },
    #[error("no answer within {0}s")]
    Timeout(u64),
}

/// What the probe at `url` saw within `limit`, or why it could not be asked.
pub async fn ask(
    client: &WebClient<Empty<Bytes>>,
    url: &str,
    authorization: &str,
    limit: Duration,
) -> Result<Vec<Finding>, AskError> {
    let request = http::Request::get(url)
        .header(http::header::AUTHORIZATION, authorization)
        .header(http::header::USER_AGENT, "certkeeper")
        .body(Empty::new())
        .map_err(AskError::Request)?;
    let exchange = async {
        let response = client.request(request).await.map_err(AskError::Connect)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(AskError::Body)?
            .to_bytes();
        match status {
            http::StatusCode::OK => serde_json::from_slice(&body).map_err(AskError::NotFindings),
            status => Err(AskError::Status {
                status,
                body: String::from_utf8_lossy(&body).trim().to_string(),
            }),
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| Err(AskError::Timeout(limit.as_secs())))
}
