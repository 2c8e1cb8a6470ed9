//! A simulated year for a 6-day and a 90-day certificate, run through the real scheduling
//! functions with time as a parameter: the CA goes down for up to two days at random, answers
//! "rate limited" now and then, and port 80 is blocked for a day. No certificate may be expired
//! for a single minute. Prints the number of renewals and the smallest remaining lifetime.
//! Then the same for Let's Encrypt's 2027 profiles: `classic` dropping from 90 to 64 days on
//! 2027-02-10, `tlsserver` (45 days) and `shortlived` (6 days), where no week may hold more
//! than the 5 certificates of one name set the CA allows.
//!
//! `cargo test --test tests simulation -- --nocapture` shows the figures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use certkeeper::deploy::bundle::LeafInfo;
use certkeeper::renewal::schedule::next_due;
use certkeeper::renewal::state::CertState;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86400);

struct Outcome {
    renewals: u32,
    failed_attempts: u32,
    smallest_remaining: Duration,
    expired: Duration,
    /// The most certificates issued within any 168 hours (Let's Encrypt allows 5 of one set).
    most_in_a_week: usize,
}

/// Non-overlapping outages of up to two days, at least a week apart.
fn outages(
    rng: &mut fastrand::Rng,
    start: SystemTime,
    count: usize,
) -> Vec<(SystemTime, SystemTime)> {
    let mut at = start;
    (0..count)
        .map(|_| {
            at += DAY * rng.u32(7..50);
            let length = Duration::from_secs(rng.u64(HOUR.as_secs()..=2 * DAY.as_secs()));
            let outage = (at, at + length);
            at += length;
            outage
        })
        .collect()
}

fn simulate(lifetime: Duration, seed: u64) -> Outcome {
    simulate_from(UNIX_EPOCH + DAY * 20_000, |_| lifetime, seed)
}

/// A year from `start` in which a certificate issued at `t` lives `lifetime(t)`.
fn simulate_from(
    start: SystemTime,
    lifetime: impl Fn(SystemTime) -> Duration,
    seed: u64,
) -> Outcome {
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = start + DAY * 365;
    let ca_down = outages(&mut rng, start, 6);
    let blocked_from = start + DAY * rng.u32(30..300);
    let port_blocked = (blocked_from, blocked_from + DAY);
    let failing = |t: SystemTime| {
        ca_down.iter().any(|(from, to)| (*from..*to).contains(&t))
            || (port_blocked.0..port_blocked.1).contains(&t)
    };

    let issue = |t: SystemTime| LeafInfo {
        // CAs backdate notBefore by an hour, as Let's Encrypt does.
        not_before: t - HOUR,
        not_after: t - HOUR + lifetime(t),
        serial: format!("{t:?}"),
        names: vec![],
    };
    let mut t = start;
    let mut leaf = issue(t);
    let mut state = CertState::default();
    state.record_success(t);
    let mut outcome = Outcome {
        renewals: 0,
        failed_attempts: 0,
        smallest_remaining: lifetime(t),
        expired: Duration::ZERO,
        most_in_a_week: 1,
    };
    let mut issued = vec![t];
    let mut jitter = rng.f64();
    for _ in 0..200_000 {
        let due = next_due(Some(&leaf), &state, jitter).at(t);
        t = t.max(due);
        if t >= end {
            break;
        }
        // Rate-limited answers: 5% of the attempts.
        if failing(t) || rng.f64() < 0.05 {
            state.record_failure(t, "simulated fault".into());
            outcome.failed_attempts += 1;
            continue;
        }
        match leaf.not_after.duration_since(t) {
            Ok(left) => outcome.smallest_remaining = outcome.smallest_remaining.min(left),
            Err(past) => outcome.expired += past.duration(),
        }
        leaf = issue(t);
        issued.push(t);
        let week_ago = t.checked_sub(DAY * 7).unwrap_or(UNIX_EPOCH);
        let in_week = issued.iter().filter(|at| **at > week_ago).count();
        outcome.most_in_a_week = outcome.most_in_a_week.max(in_week);
        jitter = rng.f64();
        state.record_success(t);
        outcome.renewals += 1;
    }
    if let Err(past) = leaf.not_after.duration_since(end) {
        outcome.expired += past.duration();
    }
    outcome
}

#[test]
fn a_simulated_year_with_faults_never_lets_a_certificate_expire() {
    for (label, lifetime) in [("6-day", DAY * 6), ("90-day", DAY * 90)] {
        let mut worst = lifetime;
        let (mut renewals, mut failures) = (0, 0);
        // Twenty different years of faults each.
        for seed in 0..20 {
            let outcome = simulate(lifetime, seed);
            assert_eq!(
                outcome.expired,
                Duration::ZERO,
                "{label}, seed {seed}: expired for a while"
            );
            assert!(outcome.renewals > 0);
            worst = worst.min(outcome.smallest_remaining);
            renewals += outcome.renewals;
            failures += outcome.failed_attempts;
        }
        println!(
            "{label} certificate, 20 simulated years: {:.0} renewals and {:.0} failed attempts a year, \
             smallest remaining lifetime at renewal {:.1} h, 0 minutes expired",
            f64::from(renewals) / 20.0,
            f64::from(failures) / 20.0,
            worst.as_secs_f64() / 3600.0
        );
    }
}

#[test]
fn the_2027_profiles_never_expire_and_stay_within_the_duplicate_limit() {
    // 2026-12-01 and 2027-02-10, 00:00 UTC.
    let start = UNIX_EPOCH + Duration::from_secs(1_796_083_200);
    let classic_drops = UNIX_EPOCH + Duration::from_secs(1_802_217_600);
    let classic = |t: SystemTime| match t < classic_drops {
        true => DAY * 90,
        false => DAY * 64,
    };
    let profiles: [(&str, &dyn Fn(SystemTime) -> Duration); 3] = [
        ("classic, 90 then 64 days", &classic),
        ("tlsserver, 45 days", &|_| DAY * 45),
        ("shortlived, 6 days", &|_| DAY * 6),
    ];
    for (label, lifetime) in profiles {
        let (mut renewals, mut worst, mut most) = (0, Duration::MAX, 0);
        for seed in 0..20 {
            let outcome = simulate_from(start, lifetime, seed);
            assert_eq!(
                outcome.expired,
                Duration::ZERO,
                "{label}, seed {seed}: expired"
            );
            assert!(
                outcome.most_in_a_week <= 5,
                "{label}, seed {seed}: {} certificates in one week",
                outcome.most_in_a_week
            );
            renewals += outcome.renewals;
            worst = worst.min(outcome.smallest_remaining);
            most = most.max(outcome.most_in_a_week);
        }
        println!(
            "{label}: 20 simulated years from 2026-12-01: {:.0} renewals a year, smallest remaining \
             lifetime at renewal {:.1} h, at most {most} issued in any week, 0 minutes expired",
            f64::from(renewals) / 20.0,
            worst.as_secs_f64() / 3600.0
        );
    }
}
