//! `certificate.challenge`: which challenges prove control of the names, in which order.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};

/// A way of proving control of a name to the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Http01,
    TlsAlpn01,
    Dns01,
    /// DNS-PERSIST-01 (draft-ietf-acme-dns-persist): one TXT record, set once by the operator
    /// (`certkeeper persist-record`), proves control for every later order.
    DnsPersist01,
}

impl Method {
    /// Every method, in the order `auto` tries them.
    pub const ALL: [Method; 4] = [
        Method::Http01,
        Method::TlsAlpn01,
        Method::Dns01,
        Method::DnsPersist01,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Http01 => "http-01",
            Method::TlsAlpn01 => "tls-alpn-01",
            Method::Dns01 => "dns-01",
            Method::DnsPersist01 => "dns-persist-01",
        }
    }

    /// Whether the names are proven in DNS (so IP addresses cannot use it).
    pub fn in_dns(self) -> bool {
        matches!(self, Method::Dns01 | Method::DnsPersist01)
    }

    fn parse(text: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// Which challenges prove control of the names, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Challenge {
    /// The ladder: HTTP-01 when the pre-flight reaches port 80, else TLS-ALPN-01 when it
    /// reaches port 443, else DNS-01 (when configured), else DNS-PERSIST-01 when the
    /// operator's record would do; wildcards always DNS-01; an HTTP-01 validation that fails
    /// is retried with DNS-01.
    #[default]
    Auto,
    /// These methods, in this order (`challenge = "http-01"` is a ladder of one).
    Ladder([Option<Method>; Method::ALL.len()]),
}

impl Challenge {
    pub fn only(method: Method) -> Challenge {
        Challenge::ladder(&[method])
    }

    /// These methods in this order (each at most once; the first four).
    pub fn ladder(methods: &[Method]) -> Challenge {
        let mut steps = [None; Method::ALL.len()];
        for (step, method) in steps.iter_mut().zip(methods) {
            *step = Some(*method);
        }
        Challenge::Ladder(steps)
    }

    /// The methods tried, in order, given whether a DNS-01 provider is configured.
    pub fn steps(&self, dns01: bool) -> Vec<Method> {
        match self {
            Challenge::Auto => Method::ALL
                .into_iter()
                .filter(|m| dns01 || *m != Method::Dns01)
                .collect(),
            Challenge::Ladder(steps) => steps.iter().flatten().copied().collect(),
        }
    }

    /// Whether `method` may be used at all.
    pub fn allows(&self, method: Method) -> bool {
        self.steps(true).contains(&method)
    }

    /// Whether the config names `method` itself (with `auto`, the later steps are fallbacks
    /// that are looked at only when the ones before are ruled out).
    pub fn names(&self, method: Method) -> bool {
        matches!(self, Challenge::Ladder(_)) && self.allows(method)
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Challenge::Auto => f.write_str("auto"),
            Challenge::Ladder(_) => {
                let steps: Vec<&str> = self.steps(true).iter().map(|m| m.as_str()).collect();
                f.write_str(&steps.join(","))
            }
        }
    }
}

/// `challenge = "auto"`, `"http-01"`, … or a list such as `["tls-alpn-01", "dns-01"]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawChallenge {
    One(String),
    List(Vec<String>),
}

impl Validator<'_> {
    pub(super) fn challenge(
        &self,
        raw: Option<&Spanned<RawChallenge>>,
    ) -> Result<Challenge, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Challenge::Auto);
        };
        let wrong = |what: &str| {
            self.located.error(
                raw.span(),
                format!(
                    "certificate.challenge: {what}; write \"auto\", one of \"http-01\", \"tls-alpn-01\", \
                     \"dns-01\", \"dns-persist-01\", or a list of them in the order to try, such as \
                     [\"tls-alpn-01\", \"dns-01\"]"
                ),
            )
        };
        let written: Vec<&str> = match raw.get_ref() {
            RawChallenge::One(one) if one == "auto" => return Ok(Challenge::Auto),
            RawChallenge::One(one) => vec![one.as_str()],
            RawChallenge::List(list) => list.iter().map(String::as_str).collect(),
        };
        let mut steps = [None; Method::ALL.len()];
        for (index, text) in written.iter().enumerate() {
            let method = Method::parse(text)
                .ok_or_else(|| wrong(&format!("\"{text}\" is not a challenge")))?;
            if steps.contains(&Some(method)) {
                return Err(wrong(&format!("\"{text}\" is listed twice")));
            }
            *steps
                .get_mut(index)
                .ok_or_else(|| wrong("there are only four challenges"))? = Some(method);
        }
        if steps[0].is_none() {
            return Err(wrong("the list is empty"));
        }
        Ok(Challenge::Ladder(steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn challenge(written: &str) -> Result<Challenge, String> {
        let text = format!(
            "[dns01]\nprovider = \"exec\"\ncommand = \"/bin/true\"\n\n[[certificate]]\n\
             name = \"media\"\ndomains = [\"media.example.com\"]\nchallenge = {written}\n"
        );
        Config::parse(std::path::Path::new("/etc/certkeeper/test.toml"), &text)
            .map(|config| config.certificates[0].challenge)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_challenge_may_be_listed_once_in_any_order() {
        let all = r#"["dns-persist-01", "dns-01", "tls-alpn-01", "http-01"]"#;
        let ladder = challenge(all).unwrap();
        assert_eq!(
            ladder.steps(true),
            [
                Method::DnsPersist01,
                Method::Dns01,
                Method::TlsAlpn01,
                Method::Http01
            ]
        );
        assert_eq!(
            ladder.to_string(),
            "dns-persist-01,dns-01,tls-alpn-01,http-01"
        );
        assert_eq!(challenge("\"auto\"").unwrap(), Challenge::Auto);
        assert_eq!(
            challenge("\"tls-alpn-01\"").unwrap(),
            Challenge::only(Method::TlsAlpn01)
        );
        let twice = challenge(r#"["http-01", "http-01"]"#).unwrap_err();
        assert!(twice.contains("\"http-01\" is listed twice"), "{twice}");
        let unknown = challenge("\"http-02\"").unwrap_err();
        assert!(
            unknown.contains("\"http-02\" is not a challenge"),
            "{unknown}"
        );
        let empty = challenge("[]").unwrap_err();
        assert!(empty.contains("the list is empty"), "{empty}");
    }
}
