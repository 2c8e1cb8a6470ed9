//! The world as the engine's core sees it when it decides: plans on disk, the CAs'
//! rate-limit ledgers, and certkeeper's own port-80 listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use tokio::sync::watch;

use super::core::World;
use crate::challenge::http01::{self, ListenError, Tokens};
use crate::config::{AcmeConfig, CertificateConfig};
use crate::deploy::store::Store;
use crate::renewal::plan::{Plan, plan};
use crate::renewal::ratelimit::{Deferred, Ledger};

/// The world as the core sees it: plans on disk, the CAs' rate-limit ledgers, the listener.
pub(super) struct Facts<'a> {
    pub(super) store: &'a Store,
    pub(super) acme: &'a AcmeConfig,
    pub(super) ledgers: &'a mut HashMap<String, Ledger>,
    pub(super) listener: &'a mut Listener,
}

impl World for Facts<'_> {
    fn plan(&mut self, cert: &CertificateConfig, now: SystemTime) -> Plan {
        plan(self.store, cert, now)
    }

    fn admit(
        &mut self,
        ca: &str,
        names: &[String],
        renewal: bool,
        now: SystemTime,
    ) -> Result<(), Deferred> {
        let ledger = ledger_of(self.ledgers, self.store, ca);
        ledger.admit(names, renewal, &self.acme.limits_for(ca), now)?;
        if let Err(e) = ledger.record_order(now) {
            tracing::warn!(error = %e, "cannot save the rate-limit ledger; counting in memory");
        }
        Ok(())
    }

    fn listen(&mut self) -> Result<(), ListenError> {
        self.listener.ensure()
    }
}

/// The rate-limit ledger of the CA `ca`, read from the store on first use (no key copied
/// once it is there: this runs for every order).
pub(super) fn ledger_of<'l>(
    ledgers: &'l mut HashMap<String, Ledger>,
    store: &Store,
    ca: &str,
) -> &'l mut Ledger {
    if !ledgers.contains_key(ca) {
        ledgers.insert(ca.to_string(), Ledger::load(store, ca));
    }
    ledgers.get_mut(ca).expect("inserted above")
}

/// certkeeper's own port-80 listener: bound at start by a service, on first need by a one-off
/// run.
pub(super) struct Listener {
    pub(super) up: bool,
    pub(super) addr: SocketAddr,
    pub(super) tokens: Tokens,
    /// Ends the servers (listener, control socket, metrics) when the engine stops.
    pub(super) shutdown: watch::Receiver<()>,
}

impl Listener {
    pub(super) fn ensure(&mut self) -> Result<(), ListenError> {
        if self.up {
            return Ok(());
        }
        let listener = http01::bind(self.addr)?;
        let mut shutdown = self.shutdown.clone();
        let stopped = async move {
            let _ = shutdown.changed().await;
        };
        tokio::spawn(http01::serve(listener, self.tokens.clone(), None, stopped));
        self.up = true;
        Ok(())
    }
}
