//! `certificate.reload*` and `[[certificate.verify]]`: how the server is told to load the new
//! certificate, and which endpoints must then serve it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{ConfigError, Validator};
use crate::names::DomainName;

/// How the server is told to load the new certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    None,
    /// A shell command (`sh -c`).
    Command(String),
    /// A signal to the PID written in a pidfile (SIGHUP for SRS, ZLMediaKit).
    Signal {
        pidfile: PathBuf,
        signal: String,
    },
    /// `systemctl ACTION UNIT`: itself when root, else through the package's
    /// `certkeeper-reload@UNIT.path` trigger (`crate::deploy::reload::unit`).
    Unit {
        unit: String,
        action: UnitAction,
    },
}

/// What systemd is asked to do with a server's unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitAction {
    Reload,
    Restart,
    ReloadOrRestart,
    /// A signal to the unit's main process (`HUP`, `USR1`, `USR2`): coturn reloads its TLS
    /// files on SIGUSR2.
    Signal(String),
}

/// Whether `name` is a systemd unit name (letters, digits and `@._-:`), nothing a shell or
/// systemctl would read as an option or a path.
pub fn is_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._-:".contains(c))
}

/// A live TLS endpoint to check after a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub address: String,
    /// The name sent in SNI.
    pub sni: DomainName,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    endpoint: Spanned<String>,
    sni: Option<Spanned<String>>,
}

pub(super) fn default_reload_timeout() -> u64 {
    60
}

pub(super) fn default_verify_timeout() -> u64 {
    30
}

pub(super) fn default_verify_every() -> u64 {
    3600
}

/// Signals a reload may send, by the names operators write.
pub(super) const SIGNALS: [&str; 4] = ["HUP", "USR1", "USR2", "TERM"];

impl Validator<'_> {
    pub(super) fn reload(
        &self,
        command: Option<Spanned<String>>,
        pidfile: Option<Spanned<PathBuf>>,
        signal: Option<Spanned<String>>,
        unit: Option<Spanned<String>>,
        unit_action: Option<Spanned<String>>,
    ) -> Result<Reload, ConfigError> {
        let command = command.filter(|c| !c.get_ref().trim().is_empty());
        let chosen = [
            command.as_ref().map(|c| c.span()),
            pidfile.as_ref().map(|p| p.span()),
            unit.as_ref().map(|u| u.span()),
        ];
        if let Some(second) = chosen.iter().flatten().nth(1) {
            return Err(self.located.error(
                second.clone(),
                "certificate: set only one of reload, reload_pidfile and reload_unit",
            ));
        }
        if let Some(signal) = &signal
            && ((pidfile.is_none() && unit.is_none())
                || !SIGNALS.contains(&signal.get_ref().as_str()))
        {
            return Err(self.located.error(
                signal.span(),
                format!(
                    "certificate.reload_signal: write one of {} together with reload_pidfile or \
                     reload_unit",
                    SIGNALS.join(", ")
                ),
            ));
        }
        if let Some(action) = &unit_action
            && unit.is_none()
        {
            return Err(self.located.error(
                action.span(),
                "certificate.reload_unit_action: goes with reload_unit",
            ));
        }
        Ok(match (command, pidfile, unit) {
            (Some(command), _, _) => Reload::Command(command.into_inner()),
            (_, Some(pidfile), _) => Reload::Signal {
                pidfile: self.absolute(pidfile.into_inner()),
                signal: signal.map_or_else(|| "HUP".to_string(), Spanned::into_inner),
            },
            (_, _, Some(unit)) => {
                if !is_unit_name(unit.get_ref()) {
                    return Err(self.located.error(unit.span(), "certificate.reload_unit: write a systemd unit name such as \"nginx.service\""));
                }
                let action = match (signal, unit_action) {
                    (Some(signal), _) if signal.get_ref() == "TERM" => {
                        return Err(self.located.error(
                            signal.span(),
                            "certificate.reload_signal: TERM stops the server; with reload_unit write reload_unit_action = \"restart\" instead",
                        ));
                    }
                    (Some(signal), _) => UnitAction::Signal(signal.into_inner()),
                    (None, None) => UnitAction::Reload,
                    (None, Some(action)) => match action.get_ref().as_str() {
                        "reload" => UnitAction::Reload,
                        "restart" => UnitAction::Restart,
                        "reload-or-restart" => UnitAction::ReloadOrRestart,
                        _ => {
                            return Err(self.located.error(
                                action.span(),
                                "certificate.reload_unit_action: write \"reload\", \"restart\" or \"reload-or-restart\" (or set reload_signal for a signal)",
                            ));
                        }
                    },
                };
                Reload::Unit {
                    unit: unit.into_inner(),
                    action,
                }
            }
            _ => Reload::None,
        })
    }

    pub(super) fn endpoints(
        &self,
        raw: Vec<RawEndpoint>,
        domains: &[DomainName],
    ) -> Result<Vec<Endpoint>, ConfigError> {
        raw.into_iter()
            .map(|e| {
                let address = e.endpoint.get_ref();
                let port_ok = address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
                if !port_ok {
                    return Err(self.located.error(
                        e.endpoint.span(),
                        "certificate.verify.endpoint: write host:port, such as \"127.0.0.1:443\" or \"[::1]:8443\"",
                    ));
                }
                let sni = match e.sni {
                    Some(sni) => DomainName::parse(sni.get_ref())
                        .map_err(|err| self.located.error(sni.span(), format!("certificate.verify.sni: {err}")))?,
                    None => domains[0].clone(),
                };
                Ok(Endpoint { address: e.endpoint.into_inner(), sni })
            })
            .collect()
    }
}
