//! This host's clock against the CA's: a clock far behind makes every fresh certificate "not
//! valid yet" here, so orders are held back until it is fixed rather than thrown away.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::{AcmeClient, AcmeError, http};

/// How long a measured offset is trusted before it is asked again.
const REMEMBERED: Duration = Duration::from_secs(600);

/// How far this host's clock is ahead of the CA's (negative: behind), in seconds, to within
/// the round trip of one request.
pub async fn clock_offset(
    acme: &crate::config::AcmeConfig,
    directory: &str,
) -> Result<i64, AcmeError> {
    let http = http::AcmeHttp::new(acme.extra_root.as_deref(), acme.request_timeout)?;
    offset_through(&http, directory).await
}

/// [`clock_offset`] over `http`'s connections.
async fn offset_through(http: &http::AcmeHttp, directory: &str) -> Result<i64, AcmeError> {
    let sent = std::time::SystemTime::now();
    let server = http
        .server_time(directory)
        .await
        .map_err(|source| AcmeError::Clock {
            directory: directory.to_string(),
            source,
        })?;
    Ok(crate::net::web::offset_since(sent, server))
}

impl AcmeClient {
    /// Refuses to order when this host's clock is so far behind the CA's that the certificate
    /// would be refused as not yet valid (and the CA's duplicate limit spent for nothing).
    /// The offset is asked once per [`REMEMBERED`]; when it cannot be read, ordering goes on.
    pub async fn check_clock(&self) -> Result<(), AcmeError> {
        let remembered = *self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let offset = match remembered {
            Some((at, offset)) if at.elapsed() < REMEMBERED => offset,
            // Over the account's own connections: no second TLS handshake with the CA.
            _ => match offset_through(&self.http, self.directory()).await {
                Ok(offset) => {
                    *self.clock.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((Instant::now(), offset));
                    offset
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the CA's clock is not known; ordering all the same");
                    return Ok(());
                }
            },
        };
        match clock_blocks_orders(offset) {
            true => Err(AcmeError::ClockBehind { seconds: -offset }),
            false => Ok(()),
        }
    }
}

/// Whether this host's clock, `offset_seconds` ahead of the CA's (negative: behind), is so far
/// behind that a certificate issued now would be refused here as not yet valid.
pub fn clock_blocks_orders(offset_seconds: i64) -> bool {
    offset_seconds < -(crate::deploy::bundle::ALLOWED_SKEW.as_secs() as i64)
}
