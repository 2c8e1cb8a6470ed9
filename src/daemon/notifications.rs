//! Telling a person: on a failed renewal, on the expiry warning and (when asked) on success,
//! through an exec hook or an HTTP webhook with a JSON body.
//!
//! Delivery runs in its own tasks with a timeout and a few retries: a notifier that hangs or
//! fails never delays a renewal. One-off commands wait for delivery before exiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::config::{NotifyEvent, NotifyTarget, NotifyVia};
use crate::deploy::hook::{self, HookError};

const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened, as sent to every target (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: NotifyEventName,
    pub certificate: String,
    pub domains: Vec<String>,
    pub message: String,
    /// End of validity of the certificate now in service, if any (UTC).
    pub not_after: Option<String>,
    pub host: String,
}

impl Event {
    pub fn new(
        cert: &crate::config::CertificateConfig,
        event: NotifyEventName,
        message: String,
        not_after: Option<std::time::SystemTime>,
    ) -> Self {
        Event {
            event,
            certificate: cert.name.clone(),
            domains: cert.domains.iter().map(|d| d.to_string()).collect(),
            message,
            not_after: not_after.map(crate::timefmt::utc),
            host: host_name(),
        }
    }
}

impl Event {
    /// An event about a monitored endpoint (`[[monitor]]`): `certificate` names the endpoint.
    pub fn for_endpoint(
        endpoint: &str,
        name: &str,
        event: NotifyEventName,
        message: String,
    ) -> Self {
        Event {
            event,
            certificate: format!("monitor {endpoint}"),
            domains: vec![name.to_string()],
            message,
            not_after: None,
            host: host_name(),
        }
    }

    /// An event about a `verify` endpoint of `certificate`, looked at between renewals.
    pub fn for_certificate_endpoint(
        certificate: &str,
        name: &str,
        event: NotifyEventName,
        message: String,
    ) -> Self {
        Event {
            certificate: certificate.to_string(),
            ..Self::for_endpoint("", name, event, message)
        }
    }
}

/// This machine's name, as events carry it.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyEventName {
    Failure,
    Expiry,
    Success,
}

impl NotifyEventName {
    fn wanted_by(self, target: &NotifyTarget) -> bool {
        let kind = match self {
            NotifyEventName::Failure => NotifyEvent::Failure,
            NotifyEventName::Expiry => NotifyEvent::Expiry,
            NotifyEventName::Success => NotifyEvent::Success,
        };
        target.events.contains(&kind)
    }
}

type HttpsClient = crate::net::web::WebClient<Full<Bytes>>;

/// Sends events to the configured targets in the background.
#[derive(Clone)]
pub struct Notifier {
    targets: Arc<Vec<NotifyTarget>>,
    http: HttpsClient,
    pending: Arc<Mutex<JoinSet<()>>>,
}

impl Notifier {
    pub fn new(targets: Vec<NotifyTarget>) -> Self {
        Self {
            targets: Arc::new(targets),
            http: crate::net::web::client(),
            pending: Arc::new(Mutex::new(JoinSet::new())),
        }
    }

    /// Queues `event` for every target that wants it; returns at once.
    pub fn send(&self, event: Event) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        while pending.try_join_next().is_some() {}
        for target in self.targets.iter().filter(|t| event.event.wanted_by(t)) {
            let (target, event, http) = (target.clone(), event.clone(), self.http.clone());
            pending.spawn(async move { deliver(&target, &event, &http).await });
        }
    }

    /// Waits (at most `limit`) for queued deliveries: one-off commands call this before exit.
    pub async fn flush(&self, limit: Duration) {
        let Ok(mut pending) = self.pending.lock().map(|mut p| std::mem::take(&mut *p)) else {
            return;
        };
        let _ = tokio::time::timeout(limit, async {
            while pending.join_next().await.is_some() {}
        })
        .await;
    }
}

async fn deliver(target: &NotifyTarget, event: &Event, http: &HttpsClient) {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let mut last_error = DeliveryError::NoAnswer;
    for attempt in 1..=ATTEMPTS {
        let attempted = match &target.via {
            NotifyVia::Exec(command) => {
                tokio::time::timeout(ATTEMPT_TIMEOUT, exec(command, event, &body)).await
            }
            NotifyVia::Webhook(url) => {
                tokio::time::timeout(ATTEMPT_TIMEOUT, post(http, url, &body)).await
            }
        };
        match attempted {
            Ok(Ok(())) => return,
            Ok(Err(e)) => last_error = e,
            Err(_) => last_error = DeliveryError::NoAnswer,
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
    }
    let via = match &target.via {
        NotifyVia::Exec(command) => format!("exec `{command}`"),
        NotifyVia::Webhook(url) => format!("webhook {}", shown_url(url)),
    };
    let error = crate::net::web::chain(&last_error);
    tracing::error!(%via, %error, certificate = %event.certificate, "could not deliver a notification");
}

/// A webhook's URL as it may be logged: scheme and host only. Slack- and Discord-style URLs
/// carry their credential in the path (and some in user info or the query).
fn shown_url(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => format!(
            "{}://{}/…",
            uri.scheme_str().unwrap_or("https"),
            uri.host().unwrap_or("?")
        ),
        Err(_) => "(an unreadable URL)".into(),
    }
}

/// Why one attempt to deliver a notification failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("{status}: {stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cannot start the command")]
    Start(#[source] std::io::Error),
    #[error("the command did not end within {}s", ATTEMPT_TIMEOUT.as_secs())]
    NoEnd,
    #[error("the webhook's URL cannot be used")]
    Request(#[from] http::Error),
    #[error("cannot reach the webhook")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    #[error("the webhook answered HTTP {0}")]
    Status(http::StatusCode),
    #[error("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())]
    NoAnswer,
}

async fn exec(command: &str, event: &Event, body: &[u8]) -> Result<(), DeliveryError> {
    let kind = serde_json::to_string(&event.event).unwrap_or_default();
    let mut child = tokio::process::Command::new("/bin/sh");
    child
        .arg("-c")
        .arg(command)
        .env("CERTKEEPER_EVENT", kind.trim_matches('"'))
        .env("CERTKEEPER_NAME", &event.certificate)
        .env("CERTKEEPER_DOMAINS", event.domains.join(" "))
        .env("CERTKEEPER_MESSAGE", &event.message);
    match hook::run(child, Some(body), ATTEMPT_TIMEOUT).await {
        Ok((status, _)) if status.success() => Ok(()),
        Ok((status, stderr)) => Err(DeliveryError::Failed { status, stderr }),
        Err(HookError::Timeout) => Err(DeliveryError::NoEnd),
        Err(HookError::Start(e)) => Err(DeliveryError::Start(e)),
    }
}

async fn post(http: &HttpsClient, url: &str, body: &[u8]) -> Result<(), DeliveryError> {
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("certkeeper/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::copy_from_slice(body)))?;
    let response = http
        .request(request)
        .await
        .map_err(DeliveryError::Unreachable)?;
    let status = response.status();
    // Drain a little of the body so the connection can be reused; its content is not needed.
    let _ = response.into_body().frame().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_delivery_says_why_with_its_causes() {
        // Nothing listens on loopback port 1: the connection is refused at once.
        let http = crate::net::web::client();
        let refused = post(&http, "http://127.0.0.1:1/hook", b"{}").await;
        let said = crate::net::web::chain(&refused.expect_err("nothing listens there"));
        assert!(said.starts_with("cannot reach the webhook: "), "{said}");
        assert!(said.contains("refused"), "{said}");

        let event = Event {
            event: NotifyEventName::Failure,
            certificate: "media".into(),
            domains: vec!["media.example.com".into()],
            message: "m".into(),
            not_after: None,
            host: "h".into(),
        };
        let failed = exec("echo no >&2; exit 3", &event, b"{}").await;
        let said = crate::net::web::chain(&failed.expect_err("the command fails"));
        assert!(
            said.contains("exit status: 3") && said.ends_with("no"),
            "{said}"
        );
    }

    #[test]
    fn a_webhook_is_logged_without_its_secret_path() {
        let shown = shown_url("https://user:pw@hooks.slack.com/services/T000/B000/XXXXSECRET?x=1");
        assert_eq!(shown, "https://hooks.slack.com/…");
    }
}
