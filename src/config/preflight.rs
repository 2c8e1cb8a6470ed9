//! `[preflight]`: how the pre-flight learns what the outside sees of this host.

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreflightConfig {
    /// STUN servers ("HOST:PORT") asked for this host's public address, in order until one
    /// answers. Empty: only the interfaces' addresses and `daemon.public_ip` count.
    pub stun: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPreflight {
    #[serde(default)]
    stun: Vec<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn preflight(&self, raw: RawPreflight) -> Result<PreflightConfig, ConfigError> {
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
        Ok(PreflightConfig { stun })
    }
}
