//! DNS-PERSIST-01: each name's record looked up read-only through the configured resolvers,
//! before an order and in `check`, and judged as the CA will judge it.

use std::time::SystemTime;

use super::{Check, Finding, Preflight, Severity};
use crate::acme::{PersistIdentity, judge_persist_record};
use crate::names::DomainName;
use crate::net::dns::Answer;
use crate::timefmt;

impl Preflight {
    /// One finding per DNS name: whether its record will prove control to the CA of
    /// `identity`. A record that stops counting before `renew_by` (when the current
    /// certificate expires) is warned of ahead: the renewal after that time would fail.
    pub async fn persist_findings(
        &self,
        identity: &PersistIdentity,
        names: &[DomainName],
        renew_by: Option<SystemTime>,
        now: SystemTime,
    ) -> Vec<Finding> {
        let mut findings = Vec::new();
        for name in names.iter().filter(|name| name.ip().is_none()) {
            let fqdn = identity.record(name, names).fqdn;
            let shown = fqdn.trim_end_matches('.');
            let values = match self.dns.txt(&fqdn).await {
                Answer::Found(values) => values,
                Answer::NoRecords | Answer::NxDomain => Vec::new(),
                other => {
                    findings.push(persist_finding(
                        name,
                        Severity::Warn,
                        format!(
                            "cannot look up the record at {shown}: {other}; the CA looks for itself"
                        ),
                    ));
                    continue;
                }
            };
            let (severity, message) = match judge_persist_record(identity, name, &values, now) {
                Err(problem) => (Severity::Fail, problem.sentence(identity, name, names)),
                Ok(Some(until)) if renew_by.is_some_and(|by| until < by) => (
                    Severity::Warn,
                    format!(
                        "the record at {shown} stops counting at {} (its persistUntil), before the \
                         current certificate expires: raise persistUntil or drop it, or the renewal \
                         after that time fails",
                        timefmt::utc(until)
                    ),
                ),
                Ok(until) => (
                    Severity::Ok,
                    format!(
                        "the record at {shown} names this CA and account{}: dns-persist-01 can succeed",
                        until.map_or(String::new(), |at| format!(" until {}", timefmt::utc(at)))
                    ),
                ),
            };
            findings.push(persist_finding(name, severity, message));
        }
        findings
    }
}

fn persist_finding(name: &DomainName, severity: Severity, message: String) -> Finding {
    Finding::about(name.as_str(), None, Check::Persist, severity, message)
}
