//! The core driven with made-up times and a made-up world (disk, ledgers, listener).
use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::daemon::slots::{EXPIRY_WARNING_EVERY, STATE_UNSAVED_HOLD};
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
    let mut core = Core::service();
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
    let mut core = Core::once(FirstLook::Every);
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
    let mut core = Core::service();
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
    let mut core = Core::once(FirstLook::Every);
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
    let mut core = Core::once(FirstLook::Every);
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
    let mut core = Core::service();
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
    let mut core = Core::service();
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
    let mut core = Core::service();
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
    let mut once = Core::once(FirstLook::Every);
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
    let mut service = Core::service();
    service.slots.start("b", MAIN, true);
    let wanted = service.ari_wanted(&config, true, at(0), &mut world);
    let wanted: Vec<&str> = wanted.iter().map(|cert| cert.name.as_str()).collect();
    assert_eq!(wanted, ["a"], "c has no certificate, b is being renewed");
    // A one-off run looks once, then only at what it renewed.
    let mut once = Core::once(FirstLook::Every);
    assert_eq!(once.ari_wanted(&config, true, at(0), &mut world).len(), 2);
    assert!(once.ari_wanted(&config, true, at(1), &mut world).is_empty());
    once.slots.recorded("b", true, true, at(2));
    assert_eq!(
        once.ari_wanted(&config, true, at(3), &mut world)[0].name,
        "b"
    );
    // Its first look covers what its request may renew: `renew b`, `revoke b`; nothing for a
    // dry run or a check.
    let renew_b = Request::Renew {
        force: false,
        dry_run: false,
        names: vec!["b".into()],
    };
    let mut once = Core::once(FirstLook::of(&renew_b));
    assert_eq!(
        once.ari_wanted(&config, true, at(0), &mut world)[0].name,
        "b"
    );
    let check = Request::Check { names: Vec::new() };
    let dry_run = Request::Renew {
        force: true,
        dry_run: true,
        names: Vec::new(),
    };
    for request in [check, dry_run] {
        let mut once = Core::once(FirstLook::of(&request));
        assert!(once.ari_wanted(&config, true, at(0), &mut world).is_empty());
    }
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
    let mut service = Core::service();
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
    let mut once = Core::once(FirstLook::Every);
    assert!(
        once.expiry_warnings(&config, true, late, &mut world)
            .is_empty()
    );
}

#[test]
fn an_ended_task_frees_its_ca_and_is_answered_or_held_by_how_it_ended() {
    let config = one_ca(1, &["a", "b"]);
    let mut world = FakeWorld::default();
    let mut core = Core::service();
    assert_eq!(names(&core.starts(&config, true, at(0), &mut world)), ["a"]);
    // Abandoned (the daemon stops): answered so, and the CA has room again.
    let ended = core.ended("a", false, Ending::Abandoned, at(1));
    let abandoned = Some(RenewalResult::Deferred(Deferral::Abandoned));
    assert_eq!((ended.renewal, &ended.answer), (false, &abandoned));
    assert_eq!(core.slots.running_at(MAIN), 0);
    // Crashed: answered "failed", and left alone for a while, then tried again.
    assert_eq!(names(&core.starts(&config, true, at(2), &mut world)), ["a"]);
    let crashed = Ending::Crashed {
        error: "task 7 panicked".into(),
    };
    match core.ended("a", false, crashed, at(3)).answer {
        Some(RenewalResult::Failed { error, .. }) => {
            assert_eq!(
                error,
                "the renewal task failed unexpectedly: task 7 panicked"
            );
        }
        other => panic!("a crash is answered as a failure, not {other:?}"),
    }
    let hold = STATE_UNSAVED_HOLD.as_secs();
    assert_eq!(names(&core.starts(&config, true, at(4), &mut world)), ["b"]);
    // b renewed (its certificate due next year) but its state could not be saved: held too.
    world.due.insert("b", at(0) + 365 * DAY);
    let unsaved = Ending::Recorded {
        renewed: true,
        saved: false,
    };
    assert_eq!(core.ended("b", false, unsaved, at(5)).answer, None);
    assert_eq!(core.slots.due_at("a", at(5)), Some(at(3 + hold)));
    assert!(
        core.starts(&config, true, at(3 + hold - 1), &mut world)
            .is_empty()
    );
    assert_eq!(
        names(&core.starts(&config, true, at(3 + hold), &mut world)),
        ["a"]
    );
}

#[test]
fn a_renewal_of_the_same_names_is_counted_as_one_and_a_dry_run_frees_only_itself() {
    let config = one_ca(1, &["a"]);
    let mut world = FakeWorld {
        leaf: vec!["a"],
        ..FakeWorld::default()
    };
    let mut core = Core::once(FirstLook::Every);
    core.slots.force("a");
    core.slots.queue_dry_run("a");
    let actions = core.starts(&config, true, at(0), &mut world);
    assert_eq!(started(&actions).len(), 2, "a dry run beside the live one");
    let renewed = Ending::Recorded {
        renewed: true,
        saved: true,
    };
    let dry = core.ended("a", true, renewed, at(1));
    assert_eq!((dry.renewal, core.slots.running_at(MAIN)), (false, 1));
    let renewed = Ending::Recorded {
        renewed: true,
        saved: true,
    };
    let live = core.ended("a", false, renewed, at(2));
    assert_eq!(
        live,
        Ended {
            renewal: true,
            answer: None
        }
    );
    assert!(core.slots.idle());
}

#[test]
fn a_request_queues_what_is_due_or_forced_and_joins_what_runs() {
    let config = one_ca(4, &["a", "b"]);
    let (a, b) = (&config.certificates[0], &config.certificates[1]);
    let mut world = FakeWorld::default();
    world.due.insert("a", at(1000));
    let mut core = Core::once(FirstLook::Every);
    assert_eq!(
        core.ask_renewal(a, false, false, at(0), &mut world),
        Asked::NotDue(at(1000))
    );
    assert!(core.starts(&config, true, at(0), &mut world).is_empty());
    assert_eq!(
        core.ask_renewal(a, true, false, at(0), &mut world),
        Asked::Queued
    );
    assert_eq!(
        core.ask_renewal(b, false, false, at(0), &mut world),
        Asked::Queued
    );
    assert_eq!(
        names(&core.starts(&config, true, at(0), &mut world)),
        ["a", "b"]
    );
    // Asked again while it runs: the request waits for the running one; a dry run queues.
    assert_eq!(
        core.ask_renewal(a, true, false, at(1), &mut world),
        Asked::Running
    );
    assert_eq!(
        core.ask_renewal(a, false, true, at(1), &mut world),
        Asked::Queued
    );
    let revocation = Revocation {
        reason: crate::acme::RevokeReason::Superseded,
        key_pem: None,
    };
    assert_eq!(core.ask_revocation("a", revocation), Asked::Running);
    assert_eq!(
        started(&core.starts(&config, true, at(1), &mut world)).len(),
        1
    );
}

/// The CA of the simulated year: each certificate's leaf and state, a 6-day lifetime for
/// `short` and a 90-day one for the rest.
struct SimulatedCa {
    leaves: HashMap<String, LeafInfo>,
    states: HashMap<String, CertState>,
    jitter: f64,
}

impl SimulatedCa {
    fn issue(&mut self, name: &str, t: SystemTime) {
        let lifetime = if name == "short" { 6 * DAY } else { 90 * DAY };
        // CAs backdate notBefore by an hour, as Let's Encrypt does.
        let hour = Duration::from_secs(3600);
        let leaf = LeafInfo {
            not_before: t - hour,
            not_after: t - hour + lifetime,
            serial: format!("{t:?}"),
            names: vec![format!("{name}.example.com")],
        };
        self.leaves.insert(name.to_string(), leaf);
        self.states
            .entry(name.to_string())
            .or_default()
            .record_success(t);
    }
}

impl World for SimulatedCa {
    fn plan(&mut self, cert: &CertificateConfig, _now: SystemTime) -> Plan {
        let leaf = self.leaves.get(&cert.name).cloned();
        let state = self.states.get(&cert.name).cloned().unwrap_or_default();
        let due = crate::renewal::schedule::next_due(leaf.as_ref(), &state, self.jitter);
        Plan {
            leaf,
            state,
            due,
            problem: None,
        }
    }

    fn admit(&mut self, _: &str, _: &[String], _: bool, _: SystemTime) -> Result<(), Deferred> {
        Ok(())
    }

    fn listen(&mut self) -> Result<(), ListenError> {
        Ok(())
    }
}

/// A year of a 6-day and a 90-day certificate driven through the core as the daemon's loop
/// drives it: it sleeps as `wake` says (a timed wake-up reads every plan afresh), starts what
/// `starts` says, and each renewal ends at once, failing while the CA is down (three outages of
/// a day) and 5% of the time at random. No certificate is ever expired, and the loop wakes up
/// about hourly, never in a busy loop.
#[test]
fn a_simulated_year_through_the_core_never_lets_a_certificate_expire() {
    let config = one_ca(4, &["short", "long"]);
    let mut ca = SimulatedCa {
        leaves: HashMap::new(),
        states: HashMap::new(),
        jitter: 0.5,
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let start = at(0);
    let end = start + 365 * DAY;
    let outages: Vec<SystemTime> = [50, 150, 250].map(|day| start + day * DAY).to_vec();
    let down = |t: SystemTime| (outages.iter()).any(|from| (*from..*from + DAY).contains(&t));
    for name in ["short", "long"] {
        ca.issue(name, start);
    }
    let mut core = Core::service();
    let (mut t, mut wakes) = (start, 0);
    let mut renewals: HashMap<String, u32> = HashMap::new();
    let mut failures = 0;
    while t < end {
        wakes += 1;
        assert!(wakes < 20_000, "the loop woke {wakes} times by {t:?}");
        for action in core.starts(&config, true, t, &mut ca) {
            let Action::Start(start) = action else {
                panic!("nothing asked, nothing to answer");
            };
            let name = start.cert.name.as_str();
            let renewed = !down(t) && rng.f64() >= 0.05;
            match renewed {
                true => {
                    ca.issue(name, t);
                    *renewals.entry(name.to_string()).or_default() += 1;
                }
                false => {
                    let state = ca.states.entry(name.to_string()).or_default();
                    state.record_failure(t, "simulated fault".into());
                    failures += 1;
                }
            }
            let ending = Ending::Recorded {
                renewed,
                saved: true,
            };
            core.ended(name, false, ending, t);
        }
        for (name, leaf) in &ca.leaves {
            assert!(leaf.not_after > t, "{name} expired at {t:?}");
        }
        let wake = core.wake(&config, t, &mut ca);
        core.slots.forget_plans();
        t += wake.sleep.max(Duration::from_secs(1));
    }
    // A 6-day certificate renews with half its life left (about every 3 days), a 90-day one
    // with a third left (about every 60).
    let (short, long) = (renewals["short"], renewals["long"]);
    assert!(
        (115..=135).contains(&short),
        "{short} renewals of the 6-day one"
    );
    assert!((5..=7).contains(&long), "{long} renewals of the 90-day one");
    println!(
        "a simulated year through the core: {short} renewals of the 6-day certificate, {long} \
         of the 90-day one, {failures} failed attempts, {wakes} wake-ups, none expired"
    );
    assert!(failures > 0, "the outages were met");
    assert!(wakes > 8_000, "{wakes} wake-ups: at least hourly");
}
