//! How one certificate's renewal ended, as the daemon answers a `renew` or `revoke`: a value,
//! worded only by the CLI (and printed as it is by `renew --json`), so that a client tells
//! "rate-limited, try later" from "failed" without reading prose.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use crate::renewal::RevocationResult;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    pub name: String,
    /// Against the staging CA, nothing deployed.
    pub dry_run: bool,
    /// The challenge used for its names, and why (absent when no order was placed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeUsed>,
    pub result: RenewalResult,
    /// `revoke`: how revoking the certificate it replaced went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeUsed {
    /// `http-01`, `tls-alpn-01`, `dns-01`, or `mixed`.
    pub method: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RenewalResult {
    /// A new certificate is in place.
    Renewed {
        #[serde(with = "rfc3339")]
        not_after: SystemTime,
        /// Its version directory.
        version: Option<PathBuf>,
    },
    /// The staging CA issued a certificate that passed every check; nothing was deployed.
    DryRunOk {
        names: Vec<String>,
        #[serde(with = "rfc3339")]
        not_after: SystemTime,
    },
    /// Not tried now; the certificate in place stays.
    Deferred(Deferral),
    Failed {
        /// What went wrong and what to do, as the log says it.
        error: String,
        /// When the CA said it may be asked again (its rate limit), if it did.
        #[serde(
            default,
            with = "rfc3339::option",
            skip_serializing_if = "Option::is_none"
        )]
        retry_not_before: Option<SystemTime>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "because", rename_all = "kebab-case")]
pub enum Deferral {
    /// certkeeper is stopping before it could start.
    Stopping,
    /// The order was given up: certkeeper is stopping, or lost the cluster's renewal lease.
    Abandoned,
    /// certkeeper's own count of the CA's limits ([acme.limits]) says wait.
    RateLimited {
        #[serde(with = "rfc3339")]
        until: SystemTime,
        reason: String,
    },
}

impl Renewal {
    /// Whether it ended as asked: renewed (or a good dry run), and revoked if that was asked.
    pub fn succeeded(&self) -> bool {
        matches!(
            self.result,
            RenewalResult::Renewed { .. } | RenewalResult::DryRunOk { .. }
        ) && !matches!(self.revocation, Some(RevocationResult::Failed { .. }))
    }
}

/// Times as RFC 3339 text ("2027-02-10T12:00:00Z"), whole seconds.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let at = OffsetDateTime::from(*at)
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let text = at.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        OffsetDateTime::parse(&text, &Rfc3339)
            .map(SystemTime::from)
            .map_err(serde::de::Error::custom)
    }

    pub mod option {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            at: &Option<SystemTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] SystemTime);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(at)| at))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn outcomes_travel_as_values() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let renewal = Renewal {
            name: "media".into(),
            dry_run: false,
            challenge: None,
            result: RenewalResult::Deferred(Deferral::RateLimited {
                until: at,
                reason: "5 orders in 3 hours".into(),
            }),
            revocation: None,
        };
        let json = serde_json::to_string(&renewal).unwrap();
        assert!(
            json.contains(
                r#""status":"deferred","because":"rate-limited","until":"2027-01-15T08:00:00Z""#
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Renewal>(&json).unwrap(), renewal);
        assert!(!renewal.succeeded());
        let failed = RenewalResult::Failed {
            error: "the CA refused".into(),
            retry_not_before: Some(at),
        };
        let json = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            serde_json::from_str::<RenewalResult>(&json).unwrap(),
            failed
        );
    }
}
