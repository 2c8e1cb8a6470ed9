//! Which challenge each name of an order uses, and why: a pure decision from the config, the
//! names and the pre-flight check, so that the reason can be logged and shown in `status`.
//!
//! The policy is a ladder of methods (`auto`: HTTP-01, TLS-ALPN-01, DNS-01 where configured,
//! DNS-PERSIST-01); each name takes the first step the pre-flight does not rule out. When
//! every step is ruled out the first is used all the same: a check from the host itself can be
//! wrong.

use crate::config::Challenge;
pub use crate::config::Method;
use crate::names::DomainName;

/// The method for every name of a certificate, and the reason in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub methods: Vec<(DomainName, Method)>,
    pub reason: String,
}

impl Choice {
    pub fn method(&self, identifier: &str) -> Option<Method> {
        self.methods
            .iter()
            .find(|(name, _)| name.as_str() == identifier)
            .map(|(_, method)| *method)
    }

    pub fn all(domains: &[DomainName], method: Method, reason: impl Into<String>) -> Choice {
        Choice {
            methods: domains.iter().map(|d| (d.clone(), method)).collect(),
            reason: reason.into(),
        }
    }

    /// The one method used for every name, or "mixed".
    pub fn summary(&self) -> &'static str {
        let first = self.methods.first().map(|(_, m)| *m);
        if self.methods.iter().all(|(_, m)| Some(*m) == first) {
            first.map_or("none", Method::as_str)
        } else {
            "mixed"
        }
    }
}

/// What the pre-flight found against each method it checks: the first finding that rules it
/// out, or `None` when it passed (or was not checked).
#[derive(Debug, Clone, Copy, Default)]
pub struct Blockers<'a> {
    pub http01: Option<&'a str>,
    pub tls_alpn01: Option<&'a str>,
    pub dns_persist01: Option<&'a str>,
}

impl Blockers<'_> {
    fn of(&self, method: Method) -> Option<&str> {
        match method {
            Method::Http01 => self.http01,
            Method::TlsAlpn01 => self.tls_alpn01,
            Method::DnsPersist01 => self.dns_persist01,
            Method::Dns01 => None,
        }
    }
}

/// Decides the challenge of each name by climbing `policy`'s ladder.
pub fn choose(
    policy: Challenge,
    domains: &[DomainName],
    dns01_configured: bool,
    blockers: Blockers<'_>,
) -> Choice {
    let steps = policy.steps(dns01_configured);
    let forced = matches!(policy, Challenge::Ladder(_)) && steps.len() == 1;
    let (method, reason) = match steps.first() {
        _ if forced => (
            steps[0],
            format!("challenge = \"{}\" in the config", steps[0].as_str()),
        ),
        None => (Method::Http01, "no challenge configured".to_string()),
        Some(first) => climb(&steps, *first, blockers),
    };
    let wildcards = domains.iter().any(|d| d.is_wildcard()) && dns01_configured;
    // An IP address cannot be proven over DNS (RFC 8738): the first other step.
    let for_addresses = steps
        .iter()
        .copied()
        .find(|m| !m.in_dns())
        .unwrap_or(Method::Http01);
    let methods: Vec<(DomainName, Method)> = domains
        .iter()
        .map(|d| match (d.is_wildcard() && dns01_configured, d.ip()) {
            (true, _) if method == Method::DnsPersist01 => (d.clone(), method),
            (true, _) => (d.clone(), Method::Dns01),
            (false, Some(_)) if method.in_dns() => (d.clone(), for_addresses),
            _ => (d.clone(), method),
        })
        .collect();
    let reason = match wildcards && method != Method::Dns01 {
        true => format!("wildcard names need dns-01; {reason}"),
        false => reason,
    };
    Choice { methods, reason }
}

/// The first step no finding rules out, and why each one before it was passed over.
fn climb(steps: &[Method], first: Method, blockers: Blockers<'_>) -> (Method, String) {
    let mut passed_over = Vec::new();
    for step in steps {
        match blockers.of(*step) {
            Some(finding) => passed_over.push(format!(
                "the pre-flight check rules out {}: {finding}",
                step.as_str()
            )),
            None => {
                let why = match (*step, passed_over.is_empty()) {
                    (Method::Dns01, true) => "dns-01 is configured first".to_string(),
                    (_, true) => "the pre-flight check passed for every name".to_string(),
                    (Method::Dns01, false) => passed_over.join("; "),
                    (method, false) => format!(
                        "{}; {} reaches certkeeper",
                        passed_over.join("; "),
                        method.as_str()
                    ),
                };
                return (*step, why);
            }
        }
    }
    let why = match steps.len() {
        1 if first == Method::Http01 => format!(
            "{}; no other challenge is configured ([dns01], or a free port 443 for tls-alpn-01), so http-01 is tried anyway",
            passed_over.join("; ")
        ),
        _ => format!(
            "{}; every challenge is ruled out, so {} is tried anyway",
            passed_over.join("; "),
            first.as_str()
        ),
    };
    (first, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<DomainName> {
        list.iter().map(|n| DomainName::parse(n).unwrap()).collect()
    }

    fn blocked<'a>(http01: Option<&'a str>, tls_alpn01: Option<&'a str>) -> Blockers<'a> {
        Blockers {
            http01,
            tls_alpn01,
            dns_persist01: None,
        }
    }

    #[test]
    fn a_persist_record_that_would_not_do_climbs_to_the_next_step() {
        let domains = names(&["a.example.com"]);
        let ladder = Challenge::ladder(&[Method::DnsPersist01, Method::Http01]);
        let fine = choose(ladder, &domains, false, Blockers::default());
        assert_eq!(fine.summary(), "dns-persist-01");
        let wrong = Blockers {
            dns_persist01: Some("no dns-persist-01 record at _validation-persist.a.example.com"),
            ..Blockers::default()
        };
        let climbed = choose(ladder, &domains, false, wrong);
        assert_eq!(climbed.summary(), "http-01");
        assert!(
            climbed
                .reason
                .contains("rules out dns-persist-01: no dns-persist-01 record"),
            "{}",
            climbed.reason
        );
        // The only step is taken all the same (the renewal then refuses to order it).
        let only = Challenge::only(Method::DnsPersist01);
        assert_eq!(
            choose(only, &domains, false, wrong).summary(),
            "dns-persist-01"
        );
    }

    #[test]
    fn auto_climbs_http01_then_tls_alpn01_then_dns01_then_dns_persist01() {
        let domains = names(&["a.example.com", "*.example.com"]);
        let passed = choose(Challenge::Auto, &domains, true, Blockers::default());
        assert_eq!(passed.method("a.example.com"), Some(Method::Http01));
        assert_eq!(passed.method("*.example.com"), Some(Method::Dns01));
        assert_eq!(passed.summary(), "mixed");

        let domains = names(&["a.example.com"]);
        let no_80 = choose(
            Challenge::Auto,
            &domains,
            true,
            blocked(Some("port 80 timed out"), None),
        );
        assert_eq!(no_80.summary(), "tls-alpn-01");
        assert!(
            no_80
                .reason
                .contains("rules out http-01: port 80 timed out"),
            "{}",
            no_80.reason
        );
        assert!(
            no_80.reason.contains("tls-alpn-01 reaches certkeeper"),
            "{}",
            no_80.reason
        );

        let neither = blocked(Some("port 80 timed out"), Some("port 443 refused"));
        let dns = choose(Challenge::Auto, &domains, true, neither);
        assert_eq!(dns.summary(), "dns-01");
        assert!(dns.reason.contains("443 refused"), "{}", dns.reason);

        // Without [dns01], the operator's DNS-PERSIST-01 record is the last step.
        let persist = choose(Challenge::Auto, &domains, false, neither);
        assert_eq!(persist.summary(), "dns-persist-01");
        assert!(persist.reason.contains("443 refused"), "{}", persist.reason);

        let no_record = Blockers {
            dns_persist01: Some("no dns-persist-01 record at _validation-persist.a.example.com"),
            ..neither
        };
        let anyway = choose(Challenge::Auto, &domains, false, no_record);
        assert_eq!(anyway.summary(), "http-01");
        assert!(anyway.reason.contains("tried anyway"), "{}", anyway.reason);
        assert!(
            anyway
                .reason
                .contains("rules out dns-persist-01: no dns-persist-01 record"),
            "{}",
            anyway.reason
        );
    }

    #[test]
    fn forced_choices_and_ladders_win() {
        let domains = names(&["a.example.com"]);
        let any = blocked(Some("x"), Some("y"));
        assert_eq!(
            choose(Challenge::only(Method::Http01), &domains, true, any).summary(),
            "http-01"
        );
        assert_eq!(
            choose(
                Challenge::only(Method::Dns01),
                &domains,
                true,
                Blockers::default()
            )
            .summary(),
            "dns-01"
        );
        let ladder = Challenge::ladder(&[Method::TlsAlpn01, Method::Dns01]);
        assert_eq!(
            choose(ladder, &domains, true, Blockers::default()).summary(),
            "tls-alpn-01"
        );
        assert_eq!(choose(ladder, &domains, true, any).summary(), "dns-01");
    }
}
