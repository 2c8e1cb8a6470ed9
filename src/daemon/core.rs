//! The engine's decisions, apart from their effects (the split of ntpd-rs: one part decides,
//! the other does). Given the configuration, the time and what the world answers when asked
//! (a certificate's plan from disk, the CA's rate-limit ledger, the port-80 listener), the core
//! says what to do: start these renewals, answer these requests, warn of these expiries, fetch
//! these renewal windows, sleep this long. The loop in `mod.rs` does it and tells the core (its
//! `slots`) how it went. No clock of its own: unit tests below drive it with made-up times and
//! a made-up world, through the rules of the schedule, the limits and the requests.

use std::time::{Duration, SystemTime};

use super::expiry;
#[cfg(test)]
use super::slots::EXPIRY_WARNING_EVERY;
use super::slots::Slots;
use super::wiring::needs_http01_listener;
use crate::challenge::http01::ListenError;
use crate::config::{AcmeConfig, CertificateConfig, Config};
use crate::daemon::control::{Deferral, RenewalResult};
use crate::renewal::plan::Plan;
use crate::renewal::ratelimit::{self, Deferred};
use crate::renewal::{self, Revocation};

/// Re-evaluate at least this often, so that a suspended machine or a clock jump is noticed.
pub(super) const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// How long the engine runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// `certkeeper run`: renews whatever is due, for ever, and answers the control socket.
    Service,
    /// A one-off command with no daemon running: does what it was asked, then ends.
    Once,
}

/// What the core asks of the world while it decides.
pub(super) trait World {
    /// The plan of `cert`, as the disk says now.
    fn plan(&mut self, cert: &CertificateConfig, now: SystemTime) -> Plan;
    /// Whether the rate limits of the CA `ca` let an order for `names` go out now (`renewal`:
    /// the same names as the current certificate). An admitted order is counted.
    fn admit(
        &mut self,
        ca: &str,
        names: &[String],
        renewal: bool,
        now: SystemTime,
    ) -> Result<(), Deferred>;
    /// Brings the port-80 listener up, if it is not yet (a one-off run binds it on first need).
    fn listen(&mut self) -> Result<(), ListenError>;
}

/// What the loop is to do after a pass over the certificates.
pub(super) enum Action {
    /// Start a renewal task (boxed: a certificate's config is large beside an answer).
    Start(Box<Start>),
    /// Tell the requests waiting for `name` how it ended, no order having run.
    Answer {
        name: String,
        dry_run: bool,
        result: RenewalResult,
    },
}

/// One renewal to start: which certificate, at which CA, and what rides on it (no `Debug`: a
/// revocation may carry a private key).
pub(super) struct Start {
    pub(super) cert: CertificateConfig,
    pub(super) ca: AcmeConfig,
    pub(super) dry_run: bool,
    /// Revoke the certificate this one replaces (`certkeeper revoke`).
    pub(super) revoke: Option<Revocation>,
}

/// A certificate close to expiry whose renewals keep failing: to log and notify.
pub(super) struct Warning<'c> {
    pub(super) cert: &'c CertificateConfig,
    pub(super) not_after: SystemTime,
    pub(super) message: String,
}

/// When the loop wakes up next.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Wake {
    /// The certificate due soonest among those not being renewed (its index), and when.
    pub(super) next: Option<(usize, SystemTime)>,
    /// Whether `next` is new since the last wake-up: worth a line in the log.
    pub(super) announce: bool,
    /// How long to sleep unless something else happens first.
    pub(super) sleep: Duration,
}

pub(super) struct Core {
    pub(super) mode: Mode,
    /// Each certificate's state: plan, hold, what runs, what was asked.
    pub(super) slots: Slots,
    /// The next renewal last announced in the log.
    announced: Option<(String, SystemTime)>,
}

impl Core {
    pub(super) fn new(mode: Mode) -> Self {
        Core {
            mode,
            slots: Slots::default(),
            announced: None,
        }
    }

    /// Whether the engine follows the schedule (a one-off run starts only what it is asked).
    fn scheduled(&self) -> bool {
        self.mode == Mode::Service
    }

    /// The plan of `cert`, kept or read afresh.
    pub(super) fn plan_of(
        &mut self,
        cert: &CertificateConfig,
        now: SystemTime,
        world: &mut impl World,
    ) -> &Plan {
        self.slots.plan_or(&cert.name, || world.plan(cert, now))
    }

    /// The renewals to start now, and the requests to answer because theirs cannot start: the
    /// dry runs asked for (at the staging CA, outside the limits), then every certificate
    /// asked for or due, as long as its CA runs fewer than `acme.concurrency` and its rate
    /// limits allow. A cluster node without the lease (`leading` false) starts nothing.
    pub(super) fn starts(
        &mut self,
        config: &Config,
        leading: bool,
        now: SystemTime,
        world: &mut impl World,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if !leading {
            return actions;
        }
        self.dry_runs(config, world, &mut actions);
        for cert in &config.certificates {
            // Nothing more can start: the rest need not be looked at (this runs at every
            // wake-up, once per renewal that ends).
            if self.no_room(&config.acme) {
                break;
            }
            // A one-off run starts only what was asked, which needs no plan to know.
            if self.scheduled() {
                self.plan_of(cert, now, world);
            }
            if !self.slots.wants_start(&cert.name, self.scheduled(), now) {
                continue;
            }
            let plan = self.plan_of(cert, now, world);
            let (failures, leaf) = (plan.state.failures, plan.leaf.clone());
            let (names, renewal) = ratelimit::request_of(cert, leaf.as_ref());
            let ca = config.acme.ca_for(failures);
            if self.slots.running_at(&ca.directory) >= config.acme.concurrency {
                continue;
            }
            if needs_http01_listener(cert)
                && let Err(e) = world.listen()
            {
                self.slots.drop_request(&cert.name);
                actions.push(answer(&cert.name, false, failed(e)));
                continue;
            }
            if let Err(deferred) = world.admit(&ca.directory, &names, renewal, now) {
                tracing::warn!(name = %cert.name, ca = %ca.directory, "{}", deferred.reason);
                self.slots.hold(&cert.name, deferred.until);
                if self.slots.drop_request(&cert.name) {
                    let why = Deferral::RateLimited {
                        until: deferred.until,
                        reason: deferred.reason,
                    };
                    actions.push(answer(&cert.name, false, RenewalResult::Deferred(why)));
                }
                continue;
            }
            let revoke = self.slots.start(&cert.name, &ca.directory, renewal);
            actions.push(Action::Start(Box::new(Start {
                cert: cert.clone(),
                ca,
                dry_run: false,
                revoke,
            })));
        }
        actions
    }

    /// Whether every CA, the preferred and each fallback, already runs `acme.concurrency`
    /// renewals.
    fn no_room(&self, acme: &AcmeConfig) -> bool {
        std::iter::once(&acme.directory)
            .chain(acme.fallbacks.iter().map(|ca| &ca.directory))
            .all(|directory| self.slots.running_at(directory) >= acme.concurrency)
    }

    /// The dry runs asked for: against the staging CA, outside the rate-limit ledger and the
    /// schedule.
    fn dry_runs(&mut self, config: &Config, world: &mut impl World, actions: &mut Vec<Action>) {
        for name in self.slots.dry_runs_to_start() {
            let Some(cert) = config.certificate(&name) else {
                self.slots.drop_dry_run(&name);
                continue;
            };
            if needs_http01_listener(cert)
                && let Err(e) = world.listen()
            {
                self.slots.drop_dry_run(&name);
                actions.push(answer(&name, true, failed(e)));
                continue;
            }
            let mut ca = config.acme.clone();
            ca.directory = config.acme.staging_directory.clone();
            self.slots.start_dry_run(&name);
            actions.push(Action::Start(Box::new(Start {
                cert: cert.clone(),
                ca,
                dry_run: true,
                revoke: None,
            })));
        }
    }

    /// The certificates whose renewal window (ARI) is to be asked of the CA now: missing or
    /// due for a refresh, and wanted (a service keeps every one fresh, a one-off run looks
    /// once and then at what it renewed). None on a cluster node without the lease.
    pub(super) fn ari_wanted<'c>(
        &mut self,
        config: &'c Config,
        leading: bool,
        now: SystemTime,
        world: &mut impl World,
    ) -> Vec<&'c CertificateConfig> {
        if !leading {
            return Vec::new();
        }
        let service = self.scheduled();
        let mut due = Vec::new();
        for cert in &config.certificates {
            if self.slots.take_ari_wanted(&cert.name, service)
                && !self.slots.is_renewing(&cert.name)
                && renewal::ari_due(self.plan_of(cert, now, world), now)
            {
                due.push(cert);
            }
        }
        due
    }

    /// The expiry warnings to raise now: each certificate close to expiry whose renewals keep
    /// failing, at most hourly. A one-off run ends long before an hourly warning would matter.
    pub(super) fn expiry_warnings<'c>(
        &mut self,
        config: &'c Config,
        leading: bool,
        now: SystemTime,
        world: &mut impl World,
    ) -> Vec<Warning<'c>> {
        let mut warnings = Vec::new();
        if !self.scheduled() {
            return warnings;
        }
        for cert in &config.certificates {
            let plan = self.plan_of(cert, now, world);
            let Some((not_after, message)) = expiry::warning(plan, leading, now) else {
                continue;
            };
            if self.slots.warn_now(&cert.name, now) {
                warnings.push(Warning {
                    cert,
                    not_after,
                    message,
                });
            }
        }
        warnings
    }

    /// When to wake up: a service when the next certificate is due; at most an hour. Something
    /// due now (waiting for room at its CA) waits for a renewal to end, or the hour.
    pub(super) fn wake(
        &mut self,
        config: &Config,
        now: SystemTime,
        world: &mut impl World,
    ) -> Wake {
        let next = match self.mode {
            Mode::Service => self.next_due(config, now, world),
            Mode::Once => None,
        };
        let announce = next.is_some_and(|(index, at)| {
            let next = (config.certificates[index].name.clone(), at);
            at > now && self.announced.replace(next.clone()) != Some(next)
        });
        let sleep = next
            .and_then(|(_, at)| at.duration_since(now).ok())
            .filter(|wait| !wait.is_zero())
            .unwrap_or(LONGEST_SLEEP)
            .min(LONGEST_SLEEP);
        Wake {
            next,
            announce,
            sleep,
        }
    }

    /// The certificate due soonest, and when, among those not being renewed now.
    pub(super) fn next_due(
        &mut self,
        config: &Config,
        now: SystemTime,
        world: &mut impl World,
    ) -> Option<(usize, SystemTime)> {
        let mut soonest: Option<(usize, SystemTime)> = None;
        for (index, cert) in config.certificates.iter().enumerate() {
            if self.slots.is_renewing(&cert.name) {
                continue;
            }
            self.plan_of(cert, now, world);
            let at = self.slots.due_at(&cert.name, now).unwrap_or(now);
            if soonest.is_none_or(|(_, earliest)| at < earliest) {
                soonest = Some((index, at));
            }
        }
        soonest
    }

    /// A new configuration or lease: every plan is read afresh and the next renewal announced
    /// again.
    pub(super) fn forget(&mut self) {
        self.slots.forget_plans();
        self.announced = None;
    }
}

fn answer(name: &str, dry_run: bool, result: RenewalResult) -> Action {
    Action::Answer {
        name: name.to_string(),
        dry_run,
        result,
    }
}

/// A failure before an order, worded as the log words it.
pub(super) fn failed(error: impl ToString) -> RenewalResult {
    RenewalResult::Failed {
        error: error.to_string(),
        retry_not_before: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::deploy::bundle::LeafInfo;
    use crate::renewal::schedule::Due;
    use crate::renewal::state::CertState;

    const T0: Duration = Duration::from_secs(1_800_000_000);
    const DAY: Duration = Duration::from_secs(86400);
    const MAIN: &str = "https://ca.test/directory";
    const STAGING: &str = "https://staging.ca.test/directory";
    const OTHER: &str = "https://other.ca.test/directory";

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(seconds)
    }

    /// A config with `[acme]` lines `acme`, then one certificate per entry: its name and any
    /// extra lines (a webroot).
    fn config(acme: &str, certs: &[(&str, &str)]) -> Config {
        let mut text = format!("[acme]\nstaging_directory = \"{STAGING}\"\n{acme}\n");
        for (name, extra) in certs {
            text += &format!(
                "[[certificate]]\nname = \"{name}\"\ndomains = [\"{name}.example.com\"]\n{extra}\n"
            );
        }
        Config::parse(Path::new("/etc/certkeeper/test.toml"), &text).expect("a valid test config")
    }

    fn one_ca(concurrency: usize, names: &[&str]) -> Config {
        let acme = format!("directory = \"{MAIN}\"\nconcurrency = {concurrency}");
        let certs: Vec<(&str, &str)> = names.iter().map(|name| (*name, "")).collect();
        config(&acme, &certs)
    }

    /// The disk, the ledgers and the listener, made up.
    #[derive(Default)]
    struct FakeWorld {
        /// When each certificate is due; absent: it has none yet (due now).
        due: HashMap<&'static str, SystemTime>,
        /// Failed attempts in a row, per certificate.
        failures: HashMap<&'static str, u32>,
        /// Certificates with a current leaf (a 90-day one) but no renewal window yet.
        leaf: Vec<&'static str>,
        plans_read: usize,
        /// The CAs whose rate limit is spent, and until when.
        spent: HashMap<&'static str, SystemTime>,
        asked: usize,
        admitted: usize,
        port_taken: bool,
        binds: usize,
    }

    impl World for FakeWorld {
        fn plan(&mut self, cert: &CertificateConfig, _now: SystemTime) -> Plan {
            self.plans_read += 1;
            let name = cert.name.as_str();
            let leaf = self.leaf.contains(&name).then(|| LeafInfo {
                not_before: at(0),
                not_after: at(0) + 90 * DAY,
                serial: "01".into(),
                names: vec![format!("{name}.example.com")],
            });
            Plan {
                leaf,
                state: CertState {
                    failures: self.failures.get(name).copied().unwrap_or(0),
                    ..CertState::default()
                },
                due: self
                    .due
                    .get(name)
                    .map_or(Due::Missing, |at| Due::Renewal(*at)),
                problem: None,
            }
        }

        fn admit(
            &mut self,
            ca: &str,
            _names: &[String],
            _renewal: bool,
            now: SystemTime,
        ) -> Result<(), Deferred> {
            self.asked += 1;
            match self.spent.get(ca) {
                Some(until) if *until > now => Err(Deferred {
                    until: *until,
                    reason: "the CA's rate limit is spent".into(),
                }),
                _ => {
                    self.admitted += 1;
                    Ok(())
                }
            }
        }

        fn listen(&mut self) -> Result<(), ListenError> {
            self.binds += 1;
            match self.port_taken {
                true => Err(ListenError::InUse {
                    addr: "[::]:80".parse().expect("an address"),
                }),
                false => Ok(()),
            }
        }
    }

    /// The renewals started: (name, CA directory, dry run).
    fn started(actions: &[Action]) -> Vec<(String, String, bool)> {
        (actions.iter())
            .filter_map(|action| match action {
                Action::Start(start) => Some((
                    start.cert.name.clone(),
                    start.ca.directory.clone(),
                    start.dry_run,
                )),
                Action::Answer { .. } => None,
            })
            .collect()
    }

    fn names(actions: &[Action]) -> Vec<String> {
        started(actions)
            .into_iter()
            .map(|(name, ..)| name)
            .collect()
    }

    /// The requests answered without an order: (name, dry run, result).
    fn answered(actions: &[Action]) -> Vec<(&str, bool, &RenewalResult)> {
        (actions.iter())
            .filter_map(|action| match action {
                Action::Answer {
                    name,
                    dry_run,
                    result,
                } => Some((name.as_str(), *dry_run, result)),
                Action::Start(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_service_starts_what_is_due_up_to_its_cas_concurrency_and_reads_no_more_plans() {
        let config = one_ca(2, &["a", "b", "c", "d"]);
        let mut world = FakeWorld::default();
        world.due.insert("d", at(1000));
        let mut core = Core::new(Mode::Service);
        let actions = core.starts(&config, true, at(0), &mut world);
        assert_eq!(names(&actions), ["a", "b"]);
        assert_eq!(started(&actions)[0].1, MAIN);
        // Once the CA is full, the rest is not even read.
        assert_eq!(world.plans_read, 2);
        assert!(core.starts(&config, true, at(1), &mut world).is_empty());
        // A renewal ends (its plan read afresh says next year): the next due one starts; d is
        // not due yet.
        world.due.insert("a", at(0) + 365 * DAY);
        core.slots.end("a");
        assert_eq!(names(&core.starts(&config, true, at(2), &mut world)), ["c"]);
        for renewed in ["b", "c"] {
            world.due.insert(renewed, at(0) + 365 * DAY);
            core.slots.end(renewed);
        }
        assert!(core.starts(&config, true, at(999), &mut world).is_empty());
        assert_eq!(
            names(&core.starts(&config, true, at(1000), &mut world)),
            ["d"]
        );
        assert_eq!((world.asked, world.admitted), (4, 4));
    }

    #[test]
    fn a_one_off_run_starts_only_what_it_is_asked_and_reads_no_other_plan() {
        let config = one_ca(4, &["a", "b", "c"]);
        let mut world = FakeWorld::default();
        let mut core = Core::new(Mode::Once);
        core.slots.force("b");
        assert_eq!(names(&core.starts(&config, true, at(0), &mut world)), ["b"]);
        assert_eq!(world.plans_read, 1);
        // Served once: the request does not start it again after it ends.
        core.slots.end("b");
        assert!(core.starts(&config, true, at(1), &mut world).is_empty());
    }

    #[test]
    fn a_spent_rate_limit_holds_the_certificate_and_answers_its_request_once() {
        let config = one_ca(4, &["a", "b"]);
        let mut world = FakeWorld::default();
        world.spent.insert(MAIN, at(3600));
        let mut core = Core::new(Mode::Service);
        core.slots.force("a");
        let actions = core.starts(&config, true, at(0), &mut world);
        assert!(started(&actions).is_empty());
        // Only the request is answered; b was due by the schedule and just waits.
        match answered(&actions)[..] {
            [("a", false, RenewalResult::Deferred(Deferral::RateLimited { until, .. }))] => {
                assert_eq!(*until, at(3600))
            }
            _ => panic!("a is to be answered rate-limited until the hour"),
        }
        // Held until then: the ledger is not even asked, and the loop sleeps until then.
        let asked = world.asked;
        assert!(core.starts(&config, true, at(1800), &mut world).is_empty());
        assert_eq!(world.asked, asked);
        let wake = core.wake(&config, at(1800), &mut world);
        assert_eq!(wake.sleep, Duration::from_secs(1800));
        assert_eq!(
            names(&core.starts(&config, true, at(3600), &mut world)),
            ["a", "b"]
        );
    }

    #[test]
    fn a_port_80_that_cannot_be_bound_fails_the_request_but_not_a_webroot_certificate() {
        let certs = [("a", ""), ("w", "webroot = \"/\"")];
        let config = config(&format!("directory = \"{MAIN}\""), &certs);
        let mut world = FakeWorld {
            port_taken: true,
            ..FakeWorld::default()
        };
        let mut core = Core::new(Mode::Once);
        core.slots.force("a");
        core.slots.force("w");
        let actions = core.starts(&config, true, at(0), &mut world);
        assert_eq!(names(&actions), ["w"]);
        match answered(&actions)[..] {
            [("a", false, RenewalResult::Failed { error, .. })] => {
                assert!(error.contains("another process holds the port"), "{error}");
            }
            _ => panic!("a is to be answered failed"),
        }
        assert_eq!(world.binds, 1, "the webroot certificate needs no listener");
        // Nothing ordered for a, and its request is not tried again.
        assert_eq!(world.admitted, 1);
        assert!(core.starts(&config, true, at(1), &mut world).is_empty());
    }

    #[test]
    fn dry_runs_go_to_the_staging_ca_outside_the_limits_and_the_concurrency() {
        let config = one_ca(1, &["a", "b"]);
        let mut world = FakeWorld::default();
        world.spent.insert(MAIN, at(3600));
        let mut core = Core::new(Mode::Once);
        core.slots.queue_dry_run("a");
        core.slots.queue_dry_run("gone");
        core.slots.queue_dry_run("b");
        let actions = core.starts(&config, true, at(0), &mut world);
        let staging = STAGING.to_string();
        assert_eq!(
            started(&actions),
            [
                ("a".to_string(), staging.clone(), true),
                ("b".to_string(), staging, true)
            ]
        );
        // A certificate no longer configured is dropped without a word; nothing was asked of
        // the ledger, and the CA's concurrency is untouched.
        assert!(answered(&actions).is_empty());
        assert_eq!((world.asked, core.slots.running_at(MAIN)), (0, 0));
        assert!(core.starts(&config, true, at(1), &mut world).is_empty());
    }

    #[test]
    fn after_three_failures_the_next_ca_is_used_and_counted_there() {
        let acme = format!(
            "concurrency = 1\n[[acme.ca]]\ndirectory = \"{MAIN}\"\n[[acme.ca]]\ndirectory = \"{OTHER}\""
        );
        let config = config(&acme, &[("a", ""), ("b", ""), ("c", "")]);
        let mut world = FakeWorld::default();
        world.failures.insert("a", 3);
        let mut core = Core::new(Mode::Service);
        let actions = core.starts(&config, true, at(0), &mut world);
        let at_ca: Vec<(String, String)> = (started(&actions).into_iter())
            .map(|(name, ca, _)| (name, ca))
            .collect();
        assert_eq!(
            at_ca,
            [
                ("a".to_string(), OTHER.to_string()),
                ("b".to_string(), MAIN.to_string())
            ]
        );
        // Both CAs are full: c waits, unread.
        assert_eq!(world.plans_read, 2);
        // a renewed: room at the other CA does not help c, whose CA is the preferred one.
        world.failures.insert("a", 0);
        world.due.insert("a", at(0) + 365 * DAY);
        core.slots.end("a");
        assert!(core.starts(&config, true, at(1), &mut world).is_empty());
        world.due.insert("b", at(0) + 365 * DAY);
        core.slots.end("b");
        assert_eq!(names(&core.starts(&config, true, at(2), &mut world)), ["c"]);
    }

    #[test]
    fn a_cluster_node_without_the_lease_starts_and_fetches_nothing_until_it_leads() {
        let config = one_ca(4, &["a"]);
        let mut world = FakeWorld {
            leaf: vec!["a"],
            ..FakeWorld::default()
        };
        let mut core = Core::new(Mode::Service);
        core.slots.force("a");
        assert!(core.starts(&config, false, at(0), &mut world).is_empty());
        assert!(
            core.ari_wanted(&config, false, at(0), &mut world)
                .is_empty()
        );
        // The request waits for the lease rather than being dropped.
        assert_eq!(names(&core.starts(&config, true, at(1), &mut world)), ["a"]);
    }

    #[test]
    fn the_loop_sleeps_until_the_next_due_at_most_an_hour_and_announces_it_once() {
        let config = one_ca(4, &["a", "b"]);
        let mut world = FakeWorld::default();
        world.due.insert("a", at(600));
        world.due.insert("b", at(300));
        let mut core = Core::new(Mode::Service);
        let wake = core.wake(&config, at(0), &mut world);
        let expected = Wake {
            next: Some((1, at(300))),
            announce: true,
            sleep: Duration::from_secs(300),
        };
        assert_eq!(wake, expected);
        let again = core.wake(&config, at(100), &mut world);
        assert_eq!(
            (again.announce, again.sleep),
            (false, Duration::from_secs(200))
        );
        // b being renewed, a comes next; far away, the hour caps the sleep.
        core.slots.start("b", MAIN, true);
        world.due.insert("a", at(0) + DAY);
        core.slots.forget_plans();
        let wake = core.wake(&config, at(300), &mut world);
        assert_eq!(wake.next, Some((0, at(0) + DAY)));
        assert!(wake.announce);
        assert_eq!(wake.sleep, LONGEST_SLEEP);
        // Due now but not startable (no room): the loop waits for a renewal to end, or the hour.
        world.due.insert("a", at(0));
        core.slots.forget_plans();
        assert_eq!(core.wake(&config, at(300), &mut world).sleep, LONGEST_SLEEP);
        // A one-off run follows no schedule.
        let mut once = Core::new(Mode::Once);
        let wake = once.wake(&config, at(0), &mut world);
        assert_eq!((wake.next, wake.sleep), (None, LONGEST_SLEEP));
    }

    #[test]
    fn renewal_windows_are_fetched_for_certificates_with_a_leaf_and_not_while_renewing() {
        let config = one_ca(4, &["a", "b", "c"]);
        let mut world = FakeWorld {
            leaf: vec!["a", "b"],
            ..FakeWorld::default()
        };
        let mut service = Core::new(Mode::Service);
        service.slots.start("b", MAIN, true);
        let wanted = service.ari_wanted(&config, true, at(0), &mut world);
        let wanted: Vec<&str> = wanted.iter().map(|cert| cert.name.as_str()).collect();
        assert_eq!(wanted, ["a"], "c has no certificate, b is being renewed");
        // A one-off run looks once, then only at what it renewed.
        let mut once = Core::new(Mode::Once);
        assert_eq!(once.ari_wanted(&config, true, at(0), &mut world).len(), 2);
        assert!(once.ari_wanted(&config, true, at(1), &mut world).is_empty());
        once.slots.recorded("b", true, true, at(2));
        assert_eq!(
            once.ari_wanted(&config, true, at(3), &mut world)[0].name,
            "b"
        );
    }

    #[test]
    fn a_failing_certificate_near_expiry_is_warned_of_hourly_by_a_service_only() {
        let config = one_ca(4, &["a", "b"]);
        let mut world = FakeWorld {
            leaf: vec!["a", "b"],
            ..FakeWorld::default()
        };
        world.failures.insert("a", 2);
        let late = at(0) + 80 * DAY;
        let mut service = Core::new(Mode::Service);
        let warnings = service.expiry_warnings(&config, true, late, &mut world);
        let warned: Vec<&str> = warnings.iter().map(|w| w.cert.name.as_str()).collect();
        assert_eq!(warned, ["a"], "b is not failing");
        assert_eq!(warnings[0].not_after, at(0) + 90 * DAY);
        assert!(
            warnings[0].message.contains("expires in"),
            "{}",
            warnings[0].message
        );
        let soon = late + Duration::from_secs(60);
        assert!(
            service
                .expiry_warnings(&config, true, soon, &mut world)
                .is_empty()
        );
        let hour_later = late + EXPIRY_WARNING_EVERY;
        assert_eq!(
            service
                .expiry_warnings(&config, true, hour_later, &mut world)
                .len(),
            1
        );
        let mut once = Core::new(Mode::Once);
        assert!(
            once.expiry_warnings(&config, true, late, &mut world)
                .is_empty()
        );
    }
}
