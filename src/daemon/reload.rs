//! What a start or a SIGHUP brings: output files repaired after an interrupted run, and a
//! configuration re-read (the previous one stays in force when the new one is invalid).

use std::sync::Arc;

use super::{Daemon, sdnotify};
use crate::acme::Accounts;
use crate::challenge::dns01::Dns01;
use crate::challenge::tls_alpn01::TlsAlpn01;
use crate::cluster::Cluster;
use crate::config::{CertificateConfig, Config, ConfigError};
use crate::daemon::notifications::Notifier;
use crate::deploy::store::Store;
use crate::preflight::Preflight;

impl Daemon {
    /// Brings output files back in line with `current` after a crash mid-copy.
    pub(super) fn repair_outputs(&self) {
        for cert in &self.config.certificates {
            self.repair_output(cert);
        }
    }

    /// Brings the output files of `cert` back in line with `current`; what was done, if anything.
    pub(super) fn repair_output(&self, cert: &CertificateConfig) -> Option<String> {
        match self.store().repair_outputs(&cert.name, &cert.output) {
            Ok(0) => None,
            Ok(n) => {
                tracing::warn!(name = %cert.name, files = n, "repaired output files left out of date by an interrupted run");
                Some(format!(
                    "repaired {n} output file(s) left out of date by an interrupted run"
                ))
            }
            Err(e) => {
                tracing::error!(name = %cert.name, error = %e, "cannot repair output files");
                Some(format!("cannot repair output files: {e}"))
            }
        }
    }

    /// Re-reads the config file; the number of certificates it names, or why it was not taken
    /// (the previous config stays in force).
    pub(super) fn reload_config(&mut self) -> Result<usize, ConfigError> {
        sdnotify::reloading();
        let reloaded = self.reload_config_file();
        sdnotify::ready(&self.summary(None));
        reloaded
    }

    fn reload_config_file(&mut self) -> Result<usize, ConfigError> {
        match Config::load(&self.config_path) {
            Ok(config) => {
                for warning in &config.warnings {
                    tracing::warn!("{warning}");
                }
                if config.daemon.listen != self.config.daemon.listen {
                    tracing::warn!(
                        listen = %config.daemon.listen,
                        "daemon.listen changed: restart certkeeper to move the listener"
                    );
                }
                let cluster_changed = match (&config.cluster, &self.config.cluster) {
                    (Some(new), Some(old)) => !new.same_as(old),
                    (new, old) => new.is_some() != old.is_some(),
                };
                if cluster_changed {
                    tracing::warn!("[cluster] changed: restart certkeeper for it to take effect");
                }
                if config.daemon.state_dir != self.config.daemon.state_dir {
                    self.context.store = Store::new(&config.daemon.state_dir);
                    self.ledgers.clear();
                }
                tracing::info!(
                    certificates = config.certificates.len(),
                    "configuration re-read"
                );
                self.notifier = Notifier::new(config.notify.clone());
                self.config = Arc::new(config);
                self.published.send_replace(self.config.clone());
                // Renewals in flight finish with what they started with.
                self.context.accounts = Accounts::default();
                self.context.dns01 = dns01_of(&self.config);
                if self.context.tls_alpn01.listen() != self.config.daemon.tls_alpn_listen {
                    self.context.tls_alpn01 = TlsAlpn01::new(self.config.daemon.tls_alpn_listen);
                }
                self.context.preflight =
                    preflight_of(&self.config, self.cluster.as_ref().map(|m| &m.cluster));
                self.core.forget();
                self.repair_outputs();
                Ok(self.config.certificates.len())
            }
            Err(e) => {
                log_config_error(&e);
                Err(e)
            }
        }
    }
}

fn log_config_error(e: &ConfigError) {
    tracing::error!(error = %e, "the new configuration is invalid; keeping the previous one");
}

/// The DNS-01 provider of `config`; a broken one is logged and left out (HTTP-01 still works).
pub(super) fn dns01_of(config: &Config) -> Option<Arc<Dns01>> {
    let dns01 = config.dns01.clone()?;
    Dns01::new(dns01)
        .inspect_err(|e| tracing::error!(error = %e, "dns-01 is unavailable"))
        .ok()
        .map(Arc::new)
}

/// The pre-flight of `config`; in cluster mode it asks the other nodes too.
pub(super) fn preflight_of(config: &Config, cluster: Option<&Cluster>) -> Option<Arc<Preflight>> {
    Preflight::new(config)
        .inspect_err(|e| tracing::warn!(error = %e, "the pre-flight check is unavailable"))
        .ok()
        .map(|preflight| {
            let peers = cluster.map(|c| Arc::new(c.clone()) as Arc<dyn crate::preflight::Peers>);
            Arc::new(preflight.with_peers(peers))
        })
}
