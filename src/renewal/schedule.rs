//! When each certificate is due: pure functions of its validity, its failures and the time.
//!
//! Without ARI, renew once two thirds of the lifetime has passed (30 days left of 90), but with
//! half of it left for short lifetimes (3 days of 6), a little earlier at random so that many
//! certificates issued together do not renew together. With ARI, inside the CA's window.
//! After a failure, retry with exponential backoff, capped so that several retries still fit
//! before expiry whatever the lifetime. Time is always a parameter: the same functions run a
//! simulated year in milliseconds (tests/simulation.rs).

use std::time::{Duration, SystemTime};

use crate::deploy::bundle::LeafInfo;
use crate::renewal::state::CertState;

/// The first retry after a failure, and the longest wait between retries.
const FIRST_RETRY: Duration = Duration::from_secs(60);
const LONGEST_RETRY: Duration = Duration::from_secs(6 * 3600);

/// Why a certificate is due when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// No valid certificate covers the configured names: order now.
    Missing,
    /// Two thirds of the lifetime will have passed (minus jitter) at this time.
    Renewal(SystemTime),
    /// The last attempt failed; try again at this time.
    Retry(SystemTime),
}

impl Due {
    pub fn at(self, now: SystemTime) -> SystemTime {
        match self {
            Due::Missing => now,
            Due::Renewal(at) | Due::Retry(at) => at,
        }
    }
}

/// How much lifetime a renewal leaves, at the latest: a third of it (30 days of 90), but for
/// short lifetimes up to half (3 days of 6), so that a CA outage of two days, or a blocked port
/// for one, never outlasts a certificate.
pub fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 3).max((lifetime / 2).min(SHORT_LIVED_MARGIN))
}

const SHORT_LIVED_MARGIN: Duration = Duration::from_secs(3 * 86400);

/// Renewal time for a certificate without ARI: [`renewal_margin`] before expiry, moved earlier
/// by `jitter` (a fraction in 0..1 of 1/30 of the lifetime; pass a stable random value).
pub fn renewal_time(leaf: &LeafInfo, jitter: f64) -> SystemTime {
    let lifetime = leaf
        .not_after
        .duration_since(leaf.not_before)
        .unwrap_or_default();
    let at = leaf.not_after - renewal_margin(lifetime);
    at - lifetime.mul_f64(jitter.clamp(0.0, 1.0) / 30.0)
}
/// Wait before retry number `failures` (1 = the first retry), given the certificate's lifetime:
/// doubling from a minute, but never more than a twentieth of the lifetime, so that a 6-day
/// certificate is retried at least every 7 hours and a 2-minute test certificate every 6 s.
pub fn backoff(failures: u32, lifetime: Option<Duration>) -> Duration {
    let doubling = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let cap = lifetime.map_or(LONGEST_RETRY, |l| (l / 20).min(LONGEST_RETRY));
    doubling.min(cap).max(Duration::from_secs(1))
}

/// The renewal time inside the CA's suggested window (RFC 9773: a random point in it; ours is
/// the stable per-certificate `jitter`), when the CA gave one for this very certificate. Never
/// later than a twentieth of the lifetime before expiry, whatever the CA says. A window that
/// cannot be this certificate's (its end not after its start, or before the certificate
/// began) is not used: the lifetime rule decides instead, so a stale or broken window never
/// makes certkeeper renew at once, again and again.
pub fn ari_time(leaf: &LeafInfo, state: &CertState, jitter: f64) -> Option<SystemTime> {
    let (start, end) = ari_window(leaf, state).ok()??;
    let width = end.duration_since(start).unwrap_or_default();
    let lifetime = leaf
        .not_after
        .duration_since(leaf.not_before)
        .unwrap_or_default();
    let at = start + width.mul_f64(jitter.clamp(0.0, 1.0));
    Some(at.min(leaf.not_after - lifetime / 20))
}

/// The CA's renewal window for this very certificate (`None` when it gave none), or why it is
/// not used.
pub fn ari_window(
    leaf: &LeafInfo,
    state: &CertState,
) -> Result<Option<(SystemTime, SystemTime)>, &'static str> {
    let window = (state.ari.as_ref())
        .filter(|ari| ari.serial == leaf.serial)
        .and_then(|ari| Some((ari.start?, ari.end?)));
    match window {
        Some((start, end)) if end <= start => Err("its end is not after its start"),
        Some((_, end)) if end <= leaf.not_before => Err("it ended before the certificate began"),
        Some((start, _)) if start >= leaf.not_after => {
            Err("it begins after the certificate expires")
        }
        window => Ok(window),
    }
}

/// From when a certificate that still has not been renewed deserves an alarm: once a sixth of
/// its lifetime is left (15 days of 90, one of 6), half-way through the renewal window.
pub fn warning_time(leaf: &LeafInfo) -> SystemTime {
    let lifetime = leaf
        .not_after
        .duration_since(leaf.not_before)
        .unwrap_or_default();
    leaf.not_after - lifetime / 6
}

/// When a certificate is next due, from its current leaf (if any) and its state.
pub fn next_due(leaf: Option<&LeafInfo>, state: &CertState, jitter: f64) -> Due {
    let lifetime = leaf.and_then(|l| l.not_after.duration_since(l.not_before).ok());
    if state.failures > 0
        && let Some(last) = state.last_attempt
    {
        // Up to a fifth shorter at random, so certificates that failed together (a CA outage)
        // do not all retry in the same second.
        let wait = backoff(state.failures, lifetime).mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 5.0);
        let retry = (last + wait).max(state.retry_not_before.unwrap_or(last));
        // A retry never waits past the normal renewal time.
        return match leaf {
            Some(leaf) => Due::Retry(retry.min(leaf.not_after)),
            None => Due::Retry(retry),
        };
    }
    match leaf {
        Some(leaf) => Due::Renewal(
            ari_time(leaf, state, jitter).unwrap_or_else(|| renewal_time(leaf, jitter)),
        ),
        None => Due::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86400);

    fn leaf(days: u64) -> LeafInfo {
        let start = SystemTime::UNIX_EPOCH + DAY * 1000;
        LeafInfo {
            not_before: start,
            not_after: start + DAY * days as u32,
            serial: "01".into(),
            names: vec![],
        }
    }

    #[test]
    fn renews_at_two_thirds_or_half_for_short_lifetimes() {
        let l = leaf(90);
        assert_eq!(renewal_time(&l, 0.0), l.not_before + DAY * 60);
        assert_eq!(renewal_time(&l, 1.0), l.not_before + DAY * 57);
        let six = leaf(6);
        assert_eq!(renewal_time(&six, 0.0), six.not_before + DAY * 3);
        let nine = leaf(9);
        assert_eq!(renewal_time(&nine, 0.0), nine.not_before + DAY * 6);
    }

    #[test]
    fn backoff_doubles_and_caps_by_lifetime() {
        assert_eq!(backoff(1, None), Duration::from_secs(60));
        assert_eq!(backoff(3, None), Duration::from_secs(240));
        assert_eq!(backoff(40, None), LONGEST_RETRY);
        assert_eq!(backoff(40, Some(DAY * 2)), DAY * 2 / 20);
        assert_eq!(
            backoff(5, Some(Duration::from_secs(120))),
            Duration::from_secs(6)
        );
    }

    #[test]
    fn due_follows_state() {
        let l = leaf(90);
        let mut state = CertState::default();
        assert_eq!(next_due(None, &state, 0.0), Due::Missing);
        assert_eq!(
            next_due(Some(&l), &state, 0.0),
            Due::Renewal(l.not_before + DAY * 60)
        );
        state.record_failure(l.not_before + DAY * 61, "x".into());
        assert_eq!(
            next_due(Some(&l), &state, 0.0),
            Due::Retry(l.not_before + DAY * 61 + Duration::from_secs(60))
        );
    }

    #[test]
    fn a_window_that_cannot_be_this_certificates_is_not_used() {
        let l = leaf(90);
        let with_window = |start: SystemTime, end: SystemTime| CertState {
            ari: Some(crate::renewal::state::AriState {
                serial: l.serial.clone(),
                start: Some(start),
                end: Some(end),
                next_poll: None,
                ..Default::default()
            }),
            ..CertState::default()
        };
        let good = with_window(l.not_before + DAY * 40, l.not_before + DAY * 42);
        assert_eq!(ari_time(&l, &good, 0.0), Some(l.not_before + DAY * 40));
        // End not after start: the CA's answer is broken.
        let reversed = with_window(l.not_before + DAY * 42, l.not_before + DAY * 40);
        assert_eq!(ari_time(&l, &reversed, 0.0), None);
        let empty = with_window(l.not_before + DAY * 40, l.not_before + DAY * 40);
        assert_eq!(ari_time(&l, &empty, 0.0), None);
        // Ending before this certificate began: another certificate's window.
        let stale = with_window(l.not_before - DAY * 3, l.not_before - DAY);
        assert_eq!(ari_time(&l, &stale, 0.0), None);
        assert_eq!(
            ari_window(&l, &stale),
            Err("it ended before the certificate began")
        );
        // Beginning after expiry: no renewal inside it could come in time.
        let late = with_window(l.not_after, l.not_after + DAY);
        assert_eq!(ari_time(&l, &late, 0.0), None);
        assert_eq!(
            next_due(Some(&l), &stale, 0.0),
            Due::Renewal(l.not_before + DAY * 60),
            "the lifetime rule decides"
        );
    }

    #[test]
    fn a_rate_limit_retry_after_is_honoured() {
        let l = leaf(90);
        let mut state = CertState::default();
        let failed_at = l.not_before + DAY * 61;
        state.record_failure(failed_at, "rate limited".into());
        state.retry_not_before = Some(failed_at + DAY);
        assert_eq!(next_due(Some(&l), &state, 0.0), Due::Retry(failed_at + DAY));
    }
}
