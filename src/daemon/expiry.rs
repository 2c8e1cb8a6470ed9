//! The expiry warning: raised for a certificate close to the end of its validity whose
//! renewals keep failing. Pure (the plan and `now` are given), so the rule is unit-tested with
//! made-up times; how often it is repeated is the slots' business.

use std::time::SystemTime;

use crate::renewal::plan::Plan;
use crate::renewal::schedule;
use crate::timefmt;

/// The end of validity and the message a failing certificate close to expiry is warned with;
/// `None` while it is not failing, not yet close, or has no readable leaf. `leading`: whether
/// this node orders certificates (always, outside a cluster). A node without the cluster's
/// lease sees no failures of its own, so a certificate long past its renewal time counts as
/// failing all the same.
pub(super) fn warning(plan: &Plan, leading: bool, now: SystemTime) -> Option<(SystemTime, String)> {
    let leaf = plan.leaf.as_ref()?;
    let stalled = !leading && plan.due.at(now) <= now;
    let failing = plan.state.failures > 0 || plan.problem.is_some() || stalled;
    if !failing || now < schedule::warning_time(leaf) {
        return None;
    }
    let when = match leaf.not_after.duration_since(now) {
        Ok(left) => format!("expires in {}", timefmt::rough(left)),
        Err(past) => format!("expired {} ago", timefmt::rough(past.duration())),
    };
    let why = (plan.state.last_error.as_deref())
        .or(plan.problem.as_deref())
        .unwrap_or(match stalled {
            true => {
                "no node of the cluster has renewed it; is etcd reachable, does a node hold \
                 the renewal lease (certkeeper status)?"
            }
            false => "unknown reason",
        });
    let message = format!(
        "certificate {when} ({}) and renewals are failing: {why}",
        timefmt::utc(leaf.not_after)
    );
    Some((leaf.not_after, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::bundle::LeafInfo;
    use crate::renewal::schedule::Due;
    use crate::renewal::state::CertState;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86400);

    /// A 90-day leaf issued at day 0, due for renewal at day 60, failing `failures` times.
    fn plan(failures: u32, last_error: Option<&str>) -> Plan {
        let start = SystemTime::UNIX_EPOCH + 20_000 * DAY;
        Plan {
            leaf: Some(LeafInfo {
                not_before: start,
                not_after: start + 90 * DAY,
                serial: "01".into(),
                names: vec!["media.example.com".into()],
            }),
            state: CertState {
                failures,
                last_error: last_error.map(String::from),
                ..CertState::default()
            },
            due: Due::Renewal(start + 60 * DAY),
            problem: None,
        }
    }

    fn day(n: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + 20_000 * DAY + n * DAY
    }

    #[test]
    fn only_a_failing_certificate_in_its_last_sixth_is_warned_of() {
        // The last sixth of 90 days begins at day 75.
        assert!(
            warning(&plan(0, None), true, day(80)).is_none(),
            "not failing"
        );
        assert!(
            warning(&plan(3, Some("x")), true, day(70)).is_none(),
            "not close"
        );
        let (not_after, message) =
            warning(&plan(3, Some("port 80 refused")), true, day(80)).expect("failing and close");
        assert_eq!(not_after, day(90));
        assert!(
            message.starts_with("certificate expires in 10d ("),
            "{message}"
        );
        assert!(
            message.ends_with("and renewals are failing: port 80 refused"),
            "{message}"
        );
        let (_, message) = warning(&plan(3, None), true, day(92)).expect("expired");
        assert!(
            message.starts_with("certificate expired 2d ago"),
            "{message}"
        );
        assert!(message.ends_with("unknown reason"), "{message}");
    }

    #[test]
    fn a_node_without_the_lease_warns_of_what_nobody_renewed() {
        // No failure of its own: past its renewal time and close to expiry, it is stalled.
        let (_, message) = warning(&plan(0, None), false, day(80)).expect("stalled");
        assert!(
            message.contains("no node of the cluster has renewed it"),
            "{message}"
        );
        // The lease holder itself only warns of its own failures.
        assert!(warning(&plan(0, None), true, day(80)).is_none());
    }
}
