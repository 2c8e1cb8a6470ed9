//! How the end of a renewal task is taken in: the slot, the rate-limit ledger, the state file,
//! the cluster, the log, the notification and the requests waiting for it.

use std::time::SystemTime;

use super::Daemon;
use super::core;
use super::requests;
use crate::daemon::control::{Deferral, RenewalResult};
use crate::daemon::notifications::{Event as Notification, NotifyEventName};
use crate::renewal::ratelimit::{self, Ledger};
use crate::renewal::{self, Finished, Outcome};
use crate::timefmt;

impl Daemon {
    /// Records how a renewal task ended.
    pub(super) fn finish(
        &mut self,
        joined: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let task = self.tasks.remove(&id);
        match joined.map(|(_, finished)| finished) {
            Ok(Finished::Abandoned { name, dry_run }) => {
                match dry_run {
                    true => self.core.slots.end_dry_run(&name),
                    false => _ = self.core.slots.end(&name),
                }
                let why = RenewalResult::Deferred(Deferral::Abandoned);
                self.answer(requests::unordered(&name, dry_run, why));
            }
            Ok(Finished::Done(outcome)) if outcome.dry_run => {
                self.core.slots.end_dry_run(&outcome.cert.name);
                self.answer_outcome(&outcome);
            }
            Ok(Finished::Done(outcome)) => {
                self.answer_outcome(&outcome);
                if outcome.unpublished
                    && let Some(membership) = &mut self.cluster
                {
                    membership.unpublished.insert(outcome.cert.name.clone());
                }
                let renewal = self.core.slots.end(&outcome.cert.name).unwrap_or(false);
                if outcome.issued {
                    let (names, _) = ratelimit::request_of(&outcome.cert, None);
                    let ca = &outcome.ca;
                    let ledger = self
                        .ledgers
                        .entry(ca.clone())
                        .or_insert_with(|| Ledger::load(&self.context.store, ca));
                    if let Err(e) = ledger.record_issued(&names, renewal, SystemTime::now()) {
                        tracing::warn!(error = %e, "cannot save the rate-limit ledger; counting in memory");
                    }
                }
                self.record(&outcome);
            }
            // A renewal task that panicked is a bug: leave its certificate alone for a while,
            // then try again.
            Err(e) => {
                let (name, dry_run) = task.unwrap_or_default();
                tracing::error!(name = %name, error = %e, "a renewal task failed unexpectedly");
                let why = format!("the renewal task failed unexpectedly: {e}");
                self.answer(requests::unordered(&name, dry_run, core::failed(why)));
                match dry_run {
                    true => self.core.slots.end_dry_run(&name),
                    false => self.core.slots.crashed(&name, SystemTime::now()),
                }
            }
        }
    }

    /// Records how a live renewal ended: the state file, the slot, the log, the notification.
    fn record(&mut self, outcome: &Outcome) {
        let cert = &outcome.cert;
        let saved = renewal::record(&self.context.store, outcome);
        // Unsaved, the state would say "due now" again at once: the slot holds it back.
        let issued = outcome.result.is_ok();
        (self.core.slots).recorded(&cert.name, saved.is_ok(), issued, SystemTime::now());
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
