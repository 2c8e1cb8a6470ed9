//! `[preflight]`: how the pre-flight learns what the outside sees of this host.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreflightConfig {
    /// STUN servers ("HOST:PORT") asked for this host's public address, in order until one
    /// answers. Empty: only the interfaces' addresses and `daemon.public_ip` count.
    pub stun: Vec<String>,
    /// Probe servers (`certkeeper probe-server`) that fetch the probe token from outside.
    pub remote: Vec<String>,
    /// The secret shared with the probe servers (first line of the file).
    pub remote_token_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreflight {
    #[serde(default)]
    stun: Vec<Spanned<String>>,
    #[serde(default)]
    remote: Vec<Spanned<String>>,
    remote_token_file: Option<Spanned<PathBuf>>,
}

impl Validator<'_> {
    pub(super) fn preflight(&mut self, raw: RawPreflight) -> Result<PreflightConfig, ConfigError> {
        let stun = raw
            .stun
            .into_iter()
            .map(|server| {
                let port = server
                    .get_ref()
                    .rsplit_once(':')
                    .and_then(|(host, port)| (!host.is_empty()).then_some(port))
                    .and_then(|port| port.parse::<u16>().ok());
                match port {
                    Some(_) => Ok(server.into_inner()),
                    None => Err(self.located.error(
                        server.span(),
                        "preflight.stun: write STUN servers as \"HOST:PORT\", such as \"stun.example.net:3478\"",
                    )),
                }
            })
            .collect::<Result<_, _>>()?;
        let remote: Vec<String> = raw
            .remote
            .into_iter()
            .map(|url| match url.get_ref().parse::<http::Uri>() {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
                    Ok(url.into_inner().trim_end_matches('/').to_string())
                }
                _ => Err(self.located.error(
                    url.span(),
                    "preflight.remote: write probe servers' URLs, such as \"https://probe.example.net:8443\"",
                )),
            })
            .collect::<Result<_, _>>()?;
        let remote_token_file = match raw.remote_token_file {
            Some(file) => Some(self.secret_file(file, "preflight.remote_token_file")?),
            None if !remote.is_empty() => {
                return Err(self.located.error(
                    0..0,
                    "preflight.remote needs remote_token_file: the file holding the secret the probe servers \
                     were started with (certkeeper probe-server --token-file)",
                ));
            }
            None => None,
        };
        if remote.iter().any(|url| url.starts_with("http://")) {
            self.warnings.push(
                "preflight.remote: the shared secret goes over plain http:// to some probe servers; \
                 put them behind TLS (https://)"
                    .to_string(),
            );
        }
        Ok(PreflightConfig {
            stun,
            remote,
            remote_token_file,
        })
    }
}
