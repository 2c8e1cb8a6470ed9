//! `[[notify]]`: who hears of failures, expiry and successes, and how.

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};

/// Where to tell someone that something happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    pub via: NotifyVia,
    pub events: Vec<NotifyEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyVia {
    /// A shell command; the event is on its stdin as JSON and in CERTKEEPER_* variables.
    Exec(String),
    /// An HTTP(S) URL that receives the event as a JSON POST.
    Webhook(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyEvent {
    Failure,
    Expiry,
    Success,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    exec: Option<String>,
    webhook: Option<Spanned<String>>,
    events: Option<Vec<NotifyEvent>>,
}

impl Validator<'_> {
    pub(super) fn notify(&self, raw: Spanned<RawNotify>) -> Result<NotifyTarget, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let via = match (raw.exec, raw.webhook) {
            (Some(exec), None) if !exec.trim().is_empty() => NotifyVia::Exec(exec),
            (None, Some(url)) => {
                let ok =
                    url.get_ref().starts_with("https://") || url.get_ref().starts_with("http://");
                if !ok || url.get_ref().parse::<http::Uri>().is_err() {
                    return Err(self.located.error(
                        url.span(),
                        "notify.webhook: write an http:// or https:// URL",
                    ));
                }
                NotifyVia::Webhook(url.into_inner())
            }
            _ => {
                return Err(self.located.error(
                    span,
                    "each [[notify]] needs exactly one of exec = \"command\" or webhook = \"https://...\"",
                ));
            }
        };
        Ok(NotifyTarget {
            via,
            events: raw
                .events
                .unwrap_or_else(|| vec![NotifyEvent::Failure, NotifyEvent::Expiry]),
        })
    }
}
