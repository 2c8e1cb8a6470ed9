//! Each certificate's place in the engine, and the rules that decide when it starts. Pure: no
//! disk, no network and no clock of its own (`now` is always given), so every rule is
//! unit-tested with made-up times. The loop in `mod.rs` reads plans from disk, asks the
//! rate-limit ledger and the listener, starts tasks, and tells the slots what happened.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::renewal::Revocation;
use crate::renewal::plan::Plan;

/// How long to leave a certificate alone when its state file could not be written (or its
/// renewal task failed unexpectedly): without a saved state the schedule would say "due now"
/// again at once.
pub(super) const STATE_UNSAVED_HOLD: Duration = Duration::from_secs(300);
/// How often the expiry warning of one certificate is repeated.
pub(super) const EXPIRY_WARNING_EVERY: Duration = Duration::from_secs(3600);

/// Everything the engine holds about one certificate.
#[derive(Default)]
struct Slot {
    /// Read from disk once and kept until the certificate's state changes.
    plan: Option<Plan>,
    /// Left alone until then: its outcome could not be saved, or the CA's rate limit is spent.
    held_until: Option<SystemTime>,
    /// The live renewal running now.
    live: Option<Live>,
    /// A dry run asked for and not started yet; one running now.
    dry_run_queued: bool,
    dry_running: bool,
    /// Asked for by a request: starts whatever its schedule says.
    forced: bool,
    /// Revoke the certificate it replaces (`certkeeper revoke`), and how.
    revocation: Option<Revocation>,
    /// When its expiry warning was last raised.
    warned_at: Option<SystemTime>,
}

/// A live renewal: at which CA, and whether it renews the same set of names (a renewal does
/// not count as a new certificate in the CA's limits).
struct Live {
    ca: String,
    renewal: bool,
}

/// Every certificate's slot, by name.
#[derive(Default)]
pub(super) struct Slots {
    slots: HashMap<String, Slot>,
    /// Live renewals running now, per CA directory: kept with `Slot::live`, so that the
    /// engine's room check at every wake-up does not walk every slot (with 1,000
    /// certificates, that walk per certificate was most of a one-off run's own CPU time).
    running: HashMap<String, usize>,
    /// Renewed since the last look: their renewal windows (ARI) are to be fetched. A list, so
    /// that a one-off run of many certificates does not walk them all after each renewal.
    renewed: Vec<String>,
}

impl Slots {
    fn slot(&mut self, name: &str) -> &mut Slot {
        if !self.slots.contains_key(name) {
            self.slots.insert(name.to_string(), Slot::default());
        }
        self.slots.get_mut(name).expect("inserted above")
    }

    fn get(&self, name: &str) -> Option<&Slot> {
        self.slots.get(name)
    }

    // --- plans ---

    /// The plan of `name`, or `read` it (from disk) and keep it.
    pub(super) fn plan_or(&mut self, name: &str, read: impl FnOnce() -> Plan) -> &Plan {
        self.slot(name).plan.get_or_insert_with(read)
    }

    /// The plan of `name` changed on disk: read it afresh next time.
    pub(super) fn forget_plan(&mut self, name: &str) {
        if let Some(slot) = self.slots.get_mut(name) {
            slot.plan = None;
        }
    }

    /// Every plan is read afresh (a timed wake-up, a new config, a new lease).
    pub(super) fn forget_plans(&mut self) {
        for slot in self.slots.values_mut() {
            slot.plan = None;
        }
    }

    // --- the schedule ---

    /// When `name` is due: its plan's time, unless it is held back; `None` before its plan is
    /// read.
    pub(super) fn due_at(&self, name: &str, now: SystemTime) -> Option<SystemTime> {
        let slot = self.get(name)?;
        let due = slot.plan.as_ref()?.due.at(now);
        Some(slot.held_until.map_or(due, |held| due.max(held)))
    }

    /// Whether a live renewal of `name` should start now: asked for (whatever the schedule
    /// says), or due by the schedule when the engine runs as a service; never twice at once.
    pub(super) fn wants_start(&self, name: &str, scheduled: bool, now: SystemTime) -> bool {
        let Some(slot) = self.get(name) else {
            return false;
        };
        if slot.live.is_some() {
            return false;
        }
        slot.forced || (scheduled && self.due_at(name, now).is_some_and(|at| at <= now))
    }

    /// Leaves `name` alone until `until` (the CA's rate limit is spent).
    pub(super) fn hold(&mut self, name: &str, until: SystemTime) {
        self.slot(name).held_until = Some(until);
    }

    // --- requests ---

    /// A request asks for a live renewal of `name` now.
    pub(super) fn force(&mut self, name: &str) {
        self.slot(name).forced = true;
    }

    /// A request asks for `name` to be replaced now and the replaced one revoked.
    pub(super) fn force_revocation(&mut self, name: &str, revocation: Revocation) {
        let slot = self.slot(name);
        slot.forced = true;
        slot.revocation = Some(revocation);
    }

    /// The request for `name` will not start (the listener cannot bind, the CA's limit is
    /// spent): whether there was one to answer. A revocation asked with it is not carried
    /// over to a later renewal.
    pub(super) fn drop_request(&mut self, name: &str) -> bool {
        let slot = self.slot(name);
        slot.revocation = None;
        std::mem::take(&mut slot.forced)
    }

    /// A request asks for a dry run of `name`.
    pub(super) fn queue_dry_run(&mut self, name: &str) {
        self.slot(name).dry_run_queued = true;
    }

    /// The dry runs to start now: one at a time per certificate, the next waits for it.
    pub(super) fn dry_runs_to_start(&self) -> Vec<String> {
        let mut names: Vec<String> = (self.slots.iter())
            .filter(|(_, slot)| slot.dry_run_queued && !slot.dry_running)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The dry run of `name` will not start (its certificate is gone, the listener failed).
    pub(super) fn drop_dry_run(&mut self, name: &str) {
        self.slot(name).dry_run_queued = false;
    }

    /// What was asked and has not started: live renewals, then dry runs (to answer "stopping").
    pub(super) fn take_unstarted(&mut self) -> (Vec<String>, Vec<String>) {
        let (mut live, mut dry) = (Vec::new(), Vec::new());
        for (name, slot) in &mut self.slots {
            if std::mem::take(&mut slot.forced) {
                slot.revocation = None;
                live.push(name.clone());
            }
            if std::mem::take(&mut slot.dry_run_queued) {
                dry.push(name.clone());
            }
        }
        live.sort();
        dry.sort();
        (live, dry)
    }

    // --- running renewals ---

    /// How many live renewals run now at the CA `directory`.
    pub(super) fn running_at(&self, directory: &str) -> usize {
        self.running.get(directory).copied().unwrap_or(0)
    }

    /// A live renewal at `ca` ended (or was replaced).
    fn count_ended(&mut self, ca: &str) {
        if let Some(count) = self.running.get_mut(ca) {
            *count = count.saturating_sub(1);
        }
    }

    /// Whether a live renewal of `name` runs now.
    pub(super) fn is_renewing(&self, name: &str) -> bool {
        self.get(name).is_some_and(|slot| slot.live.is_some())
    }

    /// A live renewal of `name` starts at `ca`: the request is served; the revocation to
    /// carry out once it is replaced, if one was asked.
    pub(super) fn start(&mut self, name: &str, ca: &str, renewal: bool) -> Option<Revocation> {
        let slot = self.slot(name);
        slot.forced = false;
        let replaced = slot.live.replace(Live {
            ca: ca.to_string(),
            renewal,
        });
        let revocation = slot.revocation.take();
        if let Some(replaced) = replaced {
            self.count_ended(&replaced.ca);
        }
        *self.running.entry(ca.to_string()).or_default() += 1;
        revocation
    }

    /// The live renewal of `name` ended: whether it renewed the same names (`None` when none
    /// ran). Its plan is read afresh.
    pub(super) fn end(&mut self, name: &str) -> Option<bool> {
        let slot = self.slot(name);
        slot.plan = None;
        let live = slot.live.take()?;
        self.count_ended(&live.ca);
        Some(live.renewal)
    }

    /// The outcome of `name` is recorded: `saved` in its state file, or not, in which case it
    /// is left alone for a while rather than found "due now" again at once. A renewal that
    /// issued has its renewal window fetched.
    pub(super) fn recorded(&mut self, name: &str, saved: bool, issued: bool, now: SystemTime) {
        self.slot(name).held_until = (!saved).then_some(now + STATE_UNSAVED_HOLD);
        if issued {
            self.renewed.push(name.to_string());
        }
    }

    /// The task of `name` failed unexpectedly (a bug): left alone for a while, then tried again.
    pub(super) fn crashed(&mut self, name: &str, now: SystemTime) {
        self.end(name);
        self.slot(name).held_until = Some(now + STATE_UNSAVED_HOLD);
    }

    /// A dry run of `name` starts.
    pub(super) fn start_dry_run(&mut self, name: &str) {
        let slot = self.slot(name);
        slot.dry_run_queued = false;
        slot.dry_running = true;
    }

    /// The dry run of `name` ended.
    pub(super) fn end_dry_run(&mut self, name: &str) {
        self.slot(name).dry_running = false;
    }

    /// Whether nothing runs (a one-off run ends once it has also answered every request).
    pub(super) fn idle(&self) -> bool {
        (self.slots.values()).all(|slot| slot.live.is_none() && !slot.dry_running)
    }

    // --- after the renewal ---

    /// The certificates renewed since the last call: their renewal windows (ARI) are to be
    /// fetched.
    pub(super) fn take_renewed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.renewed)
    }

    /// Whether the expiry warning of `name` is to be raised now (at most every
    /// `EXPIRY_WARNING_EVERY`); if so it counts as raised.
    pub(super) fn warn_now(&mut self, name: &str, now: SystemTime) -> bool {
        let slot = self.slot(name);
        let recent = (slot.warned_at).is_some_and(|at| {
            now.duration_since(at)
                .is_ok_and(|e| e < EXPIRY_WARNING_EVERY)
        });
        if !recent {
            slot.warned_at = Some(now);
        }
        !recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::RevokeReason;
    use crate::renewal::schedule::Due;
    use crate::renewal::state::CertState;

    const T0: Duration = Duration::from_secs(1_800_000_000);

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(seconds)
    }

    fn plan(due: Due) -> Plan {
        Plan {
            leaf: None,
            state: CertState::default(),
            due,
            problem: None,
        }
    }

    /// Slots for `names`, each with a plan due at `due`.
    fn slots_due(names: &[&str], due: Due) -> Slots {
        let mut slots = Slots::default();
        for name in names {
            slots.plan_or(name, || plan(due));
        }
        slots
    }

    fn revocation() -> Revocation {
        Revocation {
            reason: RevokeReason::Superseded,
            key_pem: None,
        }
    }

    #[test]
    fn a_service_starts_what_is_due_and_nothing_early() {
        let slots = slots_due(&["a"], Due::Renewal(at(100)));
        assert!(!slots.wants_start("a", true, at(99)));
        assert!(slots.wants_start("a", true, at(100)));
        // A one-off run renews only what it is asked.
        assert!(!slots.wants_start("a", false, at(100)));
        assert!(!slots.wants_start("unknown", true, at(100)));
    }

    #[test]
    fn a_request_beats_the_schedule_and_is_served_once() {
        let mut slots = slots_due(&["a"], Due::Renewal(at(1000)));
        slots.force("a");
        assert!(slots.wants_start("a", false, at(0)));
        assert!(slots.start("a", "ca1", true).is_none());
        // Never twice at once, and the request does not start it again afterwards.
        assert!(!slots.wants_start("a", true, at(2000)));
        assert_eq!(slots.end("a"), Some(true));
        slots.plan_or("a", || plan(Due::Renewal(at(5000))));
        assert!(!slots.wants_start("a", true, at(2000)));
    }

    #[test]
    fn an_unsaved_outcome_holds_the_certificate_back_for_a_while() {
        let mut slots = slots_due(&["a"], Due::Missing);
        slots.start("a", "ca1", false);
        slots.end("a");
        slots.recorded("a", false, false, at(0));
        // The state on disk still says "due now": the hold wins until it ends.
        slots.plan_or("a", || plan(Due::Missing));
        let hold = STATE_UNSAVED_HOLD.as_secs();
        assert_eq!(slots.due_at("a", at(1)), Some(at(hold)));
        assert!(!slots.wants_start("a", true, at(hold - 1)));
        assert!(slots.wants_start("a", true, at(hold)));
        // Saved the next time: no hold.
        slots.recorded("a", true, true, at(hold));
        assert_eq!(slots.due_at("a", at(hold + 1)), Some(at(hold + 1)));
    }

    #[test]
    fn a_rate_limited_certificate_waits_and_its_request_is_answered() {
        let mut slots = slots_due(&["a", "b"], Due::Missing);
        slots.force_revocation("a", revocation());
        slots.hold("a", at(3600));
        // The request is dropped (to be answered "deferred"), its revocation with it.
        assert!(slots.drop_request("a"));
        assert!(!slots.drop_request("b"), "nothing was asked for b");
        assert!(!slots.wants_start("a", true, at(3599)));
        assert!(slots.wants_start("a", true, at(3600)));
        assert!(
            slots.start("a", "ca1", false).is_none(),
            "revocation dropped"
        );
    }

    #[test]
    fn a_revocation_rides_on_the_renewal_it_asked_for() {
        let mut slots = slots_due(&["a"], Due::Renewal(at(1000)));
        slots.force_revocation("a", revocation());
        assert!(slots.wants_start("a", false, at(0)));
        assert!(slots.start("a", "ca1", true).is_some());
    }

    #[test]
    fn concurrency_is_counted_per_ca() {
        let mut slots = slots_due(&["a", "b", "c"], Due::Missing);
        slots.start("a", "ca1", true);
        slots.start("b", "ca1", true);
        slots.start("c", "ca2", true);
        assert_eq!((slots.running_at("ca1"), slots.running_at("ca2")), (2, 1));
        slots.end("a");
        assert_eq!(slots.running_at("ca1"), 1);
        // Ended twice, or started again at another CA: each renewal is counted once.
        slots.end("a");
        slots.start("b", "ca2", true);
        assert_eq!((slots.running_at("ca1"), slots.running_at("ca2")), (0, 2));
        assert!(!slots.idle());
        slots.end("b");
        slots.end("c");
        assert!(slots.idle());
    }

    #[test]
    fn one_dry_run_at_a_time_per_certificate() {
        let mut slots = Slots::default();
        slots.queue_dry_run("a");
        slots.queue_dry_run("b");
        assert_eq!(slots.dry_runs_to_start(), ["a", "b"]);
        slots.start_dry_run("a");
        slots.start_dry_run("b");
        // Asked again while it runs: it waits for the running one.
        slots.queue_dry_run("a");
        assert!(slots.dry_runs_to_start().is_empty());
        assert!(!slots.idle());
        slots.end_dry_run("a");
        assert_eq!(slots.dry_runs_to_start(), ["a"]);
        // A dry run never counts as a live renewal.
        assert!(!slots.is_renewing("a"));
    }

    #[test]
    fn a_crashed_task_is_held_then_retried() {
        let mut slots = slots_due(&["a"], Due::Missing);
        slots.start("a", "ca1", true);
        slots.crashed("a", at(0));
        assert!(!slots.is_renewing("a"));
        slots.plan_or("a", || plan(Due::Missing));
        assert!(!slots.wants_start("a", true, at(1)));
        assert!(slots.wants_start("a", true, at(STATE_UNSAVED_HOLD.as_secs())));
    }

    #[test]
    fn stopping_answers_every_unstarted_request_once() {
        let mut slots = slots_due(&["a", "b"], Due::Missing);
        slots.force("b");
        slots.force_revocation("a", revocation());
        slots.queue_dry_run("a");
        assert_eq!(
            slots.take_unstarted(),
            (
                vec!["a".to_string(), "b".to_string()],
                vec!["a".to_string()]
            )
        );
        assert_eq!(slots.take_unstarted(), (vec![], vec![]));
        assert!(slots.start("a", "ca1", true).is_none());
    }

    #[test]
    fn the_expiry_warning_is_raised_at_most_hourly() {
        let mut slots = Slots::default();
        let every = EXPIRY_WARNING_EVERY.as_secs();
        assert!(slots.warn_now("a", at(0)));
        assert!(!slots.warn_now("a", at(every - 1)));
        assert!(slots.warn_now("b", at(1)), "per certificate");
        assert!(slots.warn_now("a", at(every)));
        // A clock set back does not silence it for longer.
        assert!(slots.warn_now("a", at(10)));
    }

    #[test]
    fn what_was_renewed_is_listed_once() {
        let mut slots = slots_due(&["a", "b"], Due::Missing);
        slots.recorded("a", true, true, at(0));
        slots.recorded("b", true, false, at(0));
        assert_eq!(slots.take_renewed(), ["a"]);
        assert!(slots.take_renewed().is_empty());
    }

    #[test]
    fn a_forgotten_plan_is_read_again() {
        let mut slots = slots_due(&["a"], Due::Renewal(at(100)));
        slots.forget_plans();
        assert_eq!(slots.due_at("a", at(0)), None);
        let mut reads = 0;
        slots.plan_or("a", || {
            reads += 1;
            plan(Due::Renewal(at(50)))
        });
        slots.plan_or("a", || unreachable!("kept"));
        assert_eq!((reads, slots.due_at("a", at(0))), (1, Some(at(50))));
    }
}
