//! How the end of a renewal task is taken in: the slot, the rate-limit ledger, the state file,
//! the cluster, the log, the notification and the requests waiting for it.

use std::time::SystemTime;

use super::Daemon;
use super::core::Ending;
use super::requests;
use super::world::ledger_of;
use crate::daemon::notifications::{Event as Notification, NotifyEventName};
use crate::renewal::ratelimit;
use crate::renewal::{self, Finished, Outcome};
use crate::timefmt;

impl Daemon {
    /// Takes in how a renewal task ended.
    pub(super) fn finish(
        &mut self,
        joined: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let task = self.tasks.remove(&id);
        let now = SystemTime::now();
        match joined.map(|(_, finished)| finished) {
            Ok(Finished::Abandoned { name, dry_run }) => {
                self.answer_ended(&name, dry_run, Ending::Abandoned, now);
            }
            Ok(Finished::Done(outcome)) if outcome.dry_run => {
                let renewed = outcome.result.is_ok();
                let ending = Ending::Recorded {
                    renewed,
                    saved: true,
                };
                self.core.ended(&outcome.cert.name, true, ending, now);
                self.answer_outcome(&outcome);
            }
            Ok(Finished::Done(outcome)) => self.record(&outcome, now),
            // A renewal task that panicked is a bug: the core leaves its certificate alone for
            // a while, then tries again.
            Err(e) => {
                let (name, dry_run) = task.unwrap_or_default();
                tracing::error!(name = %name, error = %e, "a renewal task failed unexpectedly");
                let ending = Ending::Crashed {
                    error: e.to_string(),
                };
                self.answer_ended(&name, dry_run, ending, now);
            }
        }
    }

    /// Tells the core, then the requests waiting for `name`, how a task that ordered nothing
    /// ended.
    fn answer_ended(&mut self, name: &str, dry_run: bool, ending: Ending, now: SystemTime) {
        if let Some(result) = self.core.ended(name, dry_run, ending, now).answer {
            self.answer(requests::unordered(name, dry_run, result));
        }
    }

    /// Records how a live renewal ended: the state file, the core, the CA's ledger, the
    /// cluster, the requests waiting for it, the log and the notification.
    fn record(&mut self, outcome: &Outcome, now: SystemTime) {
        let cert = &outcome.cert;
        let saved = renewal::record(&self.context.store, outcome).is_ok();
        let renewed = outcome.result.is_ok();
        let ended = (self.core).ended(&cert.name, false, Ending::Recorded { renewed, saved }, now);
        if outcome.issued {
            let (names, _) = ratelimit::request_of(cert, None);
            let ledger = ledger_of(&mut self.ledgers, &self.context.store, &outcome.ca);
            if let Err(e) = ledger.record_issued(&names, ended.renewal, now) {
                tracing::warn!(error = %e, "cannot save the rate-limit ledger; counting in memory");
            }
        }
        if outcome.unpublished
            && let Some(membership) = &mut self.cluster
        {
            membership.unpublished.insert(cert.name.clone());
        }
        self.answer_outcome(outcome);
        match &outcome.result {
            Ok(issued) => {
                let not_after = issued.not_after;
                tracing::info!(
                    name = %cert.name,
                    not_after = %timefmt::utc(not_after),
                    elapsed_ms = outcome.started.elapsed().as_millis() as u64,
                    "certificate issued and deployed"
                );
                let message = format!("new certificate valid until {}", timefmt::utc(not_after));
                self.notifier.send(Notification::new(
                    cert,
                    NotifyEventName::Success,
                    message,
                    Some(not_after),
                ));
            }
            Err(e) => {
                tracing::error!(name = %cert.name, error = %e, "renewal failed");
                let current = self
                    .store()
                    .current(&cert.name)
                    .ok()
                    .flatten()
                    .map(|c| c.leaf.not_after);
                self.notifier.send(Notification::new(
                    cert,
                    NotifyEventName::Failure,
                    e.to_string(),
                    current,
                ));
            }
        }
        // Told ahead, like an expiry: what would make a later renewal fail.
        let not_after = outcome.result.as_ref().ok().map(|issued| issued.not_after);
        for warning in &outcome.warnings {
            self.notifier.send(Notification::new(
                cert,
                NotifyEventName::Expiry,
                warning.clone(),
                not_after,
            ));
        }
    }
}
