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

/// What the probe at `url` saw within `limit`, or why it could not be asked.
pub async fn ask(
    client: &WebClient<Empty<Bytes>>,
    url: &str,
    authorization: &str,
    limit: Duration,
) -> Result<Vec<Finding>, String> {
    let request = http::Request::get(url)
        .header(http::header::AUTHORIZATION, authorization)
        .header(http::header::USER_AGENT, "certkeeper")
        .body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| crate::net::web::chain(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        match status {
            http::StatusCode::OK => serde_json::from_slice(&body)
                .map_err(|e| format!("its answer is not a list of findings: {e}")),
            status => Err(format!(
                "it answered HTTP {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body).trim()
            )),
        }
    };
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", limit.as_secs())))
}
