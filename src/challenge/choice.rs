//! Which challenge each name of an order uses, and why: a pure decision from the config, the
//! names and the pre-flight check, so that the reason can be logged and shown in `status`.

use crate::config::Challenge;
use crate::names::DomainName;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Http01,
    Dns01,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Http01 => "http-01",
            Method::Dns01 => "dns-01",
        }
    }
}

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

/// Decides the challenge of each name. `http01_blocked` is the first pre-flight finding that
/// rules HTTP-01 out (None when it passed, or was not run).
pub fn choose(
    policy: Challenge,
    domains: &[DomainName],
    dns01_configured: bool,
    http01_blocked: Option<&str>,
) -> Choice {
    match policy {
        Challenge::Http01 => Choice::all(
            domains,
            Method::Http01,
            "challenge = \"http-01\" in the config",
        ),
        Challenge::Dns01 => Choice::all(
            domains,
            Method::Dns01,
            "challenge = \"dns-01\" in the config",
        ),
        Challenge::Auto if !dns01_configured => {
            Choice::all(domains, Method::Http01, "no [dns01] provider is configured")
        }
        Challenge::Auto => match http01_blocked {
            Some(finding) => Choice::all(
                domains,
                Method::Dns01,
                format!("the pre-flight check rules out http-01: {finding}"),
            ),
            None => {
                let methods: Vec<(DomainName, Method)> = domains
                    .iter()
                    .map(|d| {
                        (
                            d.clone(),
                            if d.is_wildcard() {
                                Method::Dns01
                            } else {
                                Method::Http01
                            },
                        )
                    })
                    .collect();
                let reason = if methods.iter().any(|(_, m)| *m == Method::Dns01) {
                    "wildcard names need dns-01; the pre-flight check passed for the others"
                } else {
                    "the pre-flight check passed for every name"
                };
                Choice {
                    methods,
                    reason: reason.into(),
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<DomainName> {
        list.iter().map(|n| DomainName::parse(n).unwrap()).collect()
    }

    #[test]
    fn auto_prefers_http01_and_falls_back_to_dns01() {
        let domains = names(&["a.example.com", "*.example.com"]);
        let passed = choose(Challenge::Auto, &domains, true, None);
        assert_eq!(passed.method("a.example.com"), Some(Method::Http01));
        assert_eq!(passed.method("*.example.com"), Some(Method::Dns01));
        assert_eq!(passed.summary(), "mixed");
        let blocked = choose(
            Challenge::Auto,
            &domains,
            true,
            Some("port 80 on 127.0.0.1 timed out"),
        );
        assert_eq!(blocked.summary(), "dns-01");
        assert!(blocked.reason.contains("timed out"));
        let no_dns = choose(
            Challenge::Auto,
            &names(&["a.example.com"]),
            false,
            Some("blocked"),
        );
        assert_eq!(no_dns.summary(), "http-01");
        assert!(no_dns.reason.contains("no [dns01]"));
    }

    #[test]
    fn forced_choices_win() {
        let domains = names(&["a.example.com"]);
        assert_eq!(
            choose(Challenge::Http01, &domains, true, Some("x")).summary(),
            "http-01"
        );
        assert_eq!(
            choose(Challenge::Dns01, &domains, true, None).summary(),
            "dns-01"
        );
    }
}
