//! `[[monitor]]`: TLS endpoints certkeeper does not renew but keeps an eye on (a demo server's
//! default certificate, another team's proxy), checked on a schedule like `certkeeper inspect`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// `HOST:PORT`.
    pub endpoint: String,
    /// The name clients ask for (default: the host).
    pub name: String,
    /// How often to look.
    pub every: Duration,
    /// Extra trusted roots (PEM), for a private CA.
    pub root: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMonitor {
    endpoint: Spanned<String>,
    name: Option<String>,
    #[serde(default = "default_every")]
    every_secs: u64,
    root: Option<Spanned<PathBuf>>,
}

fn default_every() -> u64 {
    3600
}

impl Validator<'_> {
    pub(super) fn monitor(&self, raw: RawMonitor) -> Result<MonitorConfig, ConfigError> {
        let endpoint = raw.endpoint.get_ref().trim().to_string();
        let host = endpoint
            .rsplit_once(':')
            .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            .map(|(host, _)| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            })
            .ok_or_else(|| {
                self.located.error(
                    raw.endpoint.span(),
                    "monitor.endpoint: write HOST:PORT, such as \"demo.example.com:443\"",
                )
            })?;
        let root = match raw.root {
            Some(root) => Some(self.existing_file(root, "monitor.root")?),
            None => None,
        };
        Ok(MonitorConfig {
            endpoint,
            name: raw.name.unwrap_or(host),
            every: Duration::from_secs(raw.every_secs.max(1)),
            root,
        })
    }
}
