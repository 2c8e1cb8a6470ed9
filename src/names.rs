//! The names a certificate is for, as certkeeper uses them everywhere: DNS names in lowercase
//! ASCII (IDNA/punycode), or IP addresses (RFC 8738) in their canonical form, checked once.
//!
//! Certificates carry names in their ASCII form; comparing a configured `Media.Example.COM` or
//! `médias.example` against a certificate without normalizing is a classic silent failure.

use std::fmt;

/// A validated, normalized DNS name (possibly a `*.` wildcard), or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct DomainName(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("\"{0}\" is not a valid host name ({1}); write a name such as media.example.com")]
    Invalid(String, &'static str),
}

impl DomainName {
    /// Normalizes `input` (trim, lowercase, IDNA to punycode) and checks it is a host name.
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let trimmed = input.trim().trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        // An address, written as such (brackets allowed for IPv6), in its canonical form.
        if let Ok(ip) = trimmed
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            return Ok(Self(ip.to_string()));
        }
        let (wildcard, base) = match trimmed.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, trimmed),
        };
        let invalid = |why| NameError::Invalid(input.to_string(), why);
        // Said before IDNA would reject it, in plain words.
        if base.chars().any(char::is_whitespace) {
            return Err(invalid("it contains a space; a host name has none"));
        }
        let ascii = idna::domain_to_ascii_strict(base).map_err(|_| {
            invalid("a host name has only letters (in any script), digits, '-' and '.'")
        })?;
        if ascii.len() > 253 {
            return Err(invalid("longer than 253 characters"));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid("a public certificate needs at least two labels"));
        }
        for label in &labels {
            let ok_chars = label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if label.is_empty() || label.len() > 63 || !ok_chars {
                return Err(invalid("each label must be 1-63 letters, digits or '-'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label may not start or end with '-'"));
            }
        }
        Ok(Self(if wildcard {
            format!("*.{ascii}")
        } else {
            ascii
        }))
    }

    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The address, when this is an IP identifier rather than a DNS name.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.0.parse().ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a certificate name (already lowercase ASCII) covers this name, following the
    /// one-label wildcard rule of RFC 6125.
    pub fn is_covered_by(&self, cert_name: &str) -> bool {
        let cert_name = cert_name.to_ascii_lowercase();
        if cert_name == self.0 {
            return true;
        }
        match cert_name.strip_prefix("*.") {
            Some(base) if !self.is_wildcard() => {
                self.0.split_once('.').is_some_and(|(_, rest)| rest == base)
            }
            _ => false,
        }
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_idna() {
        assert_eq!(
            DomainName::parse("Media.Example.COM").unwrap().as_str(),
            "media.example.com"
        );
        assert_eq!(
            DomainName::parse("médias.example").unwrap().as_str(),
            "xn--mdias-bsa.example"
        );
        assert_eq!(
            DomainName::parse("*.Example.com.").unwrap().as_str(),
            "*.example.com"
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert!(matches!(
            DomainName::parse("bad name.com"),
            Err(NameError::Invalid(..))
        ));
        assert!(matches!(
            DomainName::parse("localhost"),
            Err(NameError::Invalid(..))
        ));
        assert!(matches!(
            DomainName::parse("-a.example.com"),
            Err(NameError::Invalid(..))
        ));
        assert_eq!(
            DomainName::parse("192.0.2.1").unwrap().ip(),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            DomainName::parse("[2001:DB8:0::1]").unwrap().as_str(),
            "2001:db8::1"
        );
        assert_eq!(DomainName::parse("media.example.com").unwrap().ip(), None);
        assert_eq!(DomainName::parse("  "), Err(NameError::Empty));
    }

    #[test]
    fn wildcard_coverage_is_one_label() {
        let name = DomainName::parse("a.example.com").unwrap();
        assert!(name.is_covered_by("*.example.com"));
        assert!(name.is_covered_by("A.Example.com"));
        assert!(!name.is_covered_by("*.com"));
        assert!(
            !DomainName::parse("b.a.example.com")
                .unwrap()
                .is_covered_by("*.example.com")
        );
    }
}
