//! DNS-PERSIST-01 (draft-ietf-acme-dns-persist): the one TXT record per name that proves
//! control for every later order of this account at this CA, set once by the operator.
//!
//! `_validation-persist.<name> TXT "<issuer>; accounturi=<account URL>[; policy=wildcard]
//! [; persistUntil=<unix seconds>]"`, the issuer being one of the CA's `meta.caaIdentities`.
//! What is found in DNS is judged here, before an order, so that a wrong record is explained
//! in words and never costs a failed validation at the CA.

use std::time::{Duration, SystemTime};

use super::{AcmeClient, AcmeError};
use crate::names::DomainName;
use crate::timefmt;

/// One record to set: where, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistRecord {
    /// `_validation-persist.NAME.`
    pub fqdn: String,
    pub value: String,
}

/// What a CA and an account ask of every record: one of the CA's issuer domain names, and
/// the account's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistIdentity {
    pub issuers: Vec<String>,
    pub account: String,
}

impl PersistIdentity {
    /// The record that proves `name` of a certificate for `names`: one per base name, with
    /// the wildcard policy when a wildcard of that base is among them (it covers the base
    /// name too, so one record does for both).
    pub fn record(&self, name: &DomainName, names: &[DomainName]) -> PersistRecord {
        let base = |n: &DomainName| n.as_str().trim_start_matches("*.").to_string();
        let wildcard = (names.iter()).find(|n| n.is_wildcard() && base(n) == base(name));
        record(&self.issuers[0], &self.account, wildcard.unwrap_or(name))
    }
}

impl AcmeClient {
    /// The record each of `names` needs at this CA for this account.
    pub async fn persist_records(
        &self,
        names: &[DomainName],
    ) -> Result<Vec<PersistRecord>, AcmeError> {
        let identity = self.persist_identity().await?;
        let mut records: Vec<PersistRecord> = Vec::new();
        for name in names.iter().filter(|name| name.ip().is_none()) {
            let record = identity.record(name, names);
            if !records.contains(&record) {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// This CA's issuer names and this account's URL, from the CA's directory.
    pub async fn persist_identity(&self) -> Result<PersistIdentity, AcmeError> {
        let directory = self
            .http
            .get_json(self.directory())
            .await
            .map_err(|source| AcmeError::PersistDirectory {
                directory: self.directory().to_string(),
                source,
            })?;
        let issuers: Vec<String> = (directory["meta"]["caaIdentities"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|issuer| issuer.as_str().map(str::to_string))
            .collect();
        if issuers.is_empty() {
            return Err(AcmeError::PersistNoIssuer {
                directory: self.directory().to_string(),
            });
        }
        Ok(PersistIdentity {
            issuers,
            account: self.id(),
        })
    }
}

/// What is wrong with the records found for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistProblem {
    Missing,
    /// Records exist, none naming this CA.
    OtherIssuer {
        found: Vec<String>,
    },
    /// A record names this CA, for another account (or none).
    OtherAccount {
        found: String,
    },
    /// A wildcard name needs `policy=wildcard`.
    NoWildcardPolicy,
    /// Every matching record's `persistUntil` has passed.
    Expired {
        at: SystemTime,
    },
}

impl PersistProblem {
    /// The problem and its fix, in one sentence naming the record to set for `name` of a
    /// certificate for `names`.
    pub fn sentence(
        &self,
        identity: &PersistIdentity,
        name: &DomainName,
        names: &[DomainName],
    ) -> String {
        let want = identity.record(name, names);
        let fqdn = want.fqdn.trim_end_matches('.');
        let what = match self {
            PersistProblem::Missing => format!("no dns-persist-01 record at {fqdn}"),
            PersistProblem::OtherIssuer { found } => format!(
                "the record at {fqdn} names {}, not this CA (it accepts {})",
                found.join(", "),
                identity.issuers.join(", ")
            ),
            PersistProblem::OtherAccount { found } => format!(
                "the record at {fqdn} is for another account ({found}), not this one ({})",
                identity.account
            ),
            PersistProblem::NoWildcardPolicy => {
                format!("the record at {fqdn} lacks policy=wildcard, which {name} needs")
            }
            PersistProblem::Expired { at } => format!(
                "the record at {fqdn} stopped counting at {} (its persistUntil)",
                timefmt::utc(*at)
            ),
        };
        format!(
            "{what}: set `{} IN TXT \"{}\"` (certkeeper persist-record prints it)",
            want.fqdn, want.value
        )
    }
}

/// The verdict on the TXT values found at `name`'s record: the CA will take one (`Ok`, with
/// the time it stops counting if it says), or what is wrong. Of several problems, the one
/// closest to a usable record is named.
pub fn judge(
    identity: &PersistIdentity,
    name: &DomainName,
    values: &[String],
    now: SystemTime,
) -> Result<Option<SystemTime>, PersistProblem> {
    let parsed: Vec<Parsed> = values.iter().filter_map(|v| parse(v)).collect();
    if parsed.is_empty() {
        return Err(PersistProblem::Missing);
    }
    let ours: Vec<&Parsed> = (parsed.iter())
        .filter(|p| identity.issuers.iter().any(|i| same_domain(i, &p.issuer)))
        .collect();
    let Some(first) = ours.first() else {
        let found = parsed.iter().map(|p| p.issuer.clone()).collect();
        return Err(PersistProblem::OtherIssuer { found });
    };
    let mine: Vec<&Parsed> = (ours.iter().copied())
        .filter(|p| p.account.as_deref() == Some(identity.account.as_str()))
        .collect();
    if mine.is_empty() {
        let found = first
            .account
            .clone()
            .unwrap_or_else(|| "no accounturi".into());
        return Err(PersistProblem::OtherAccount { found });
    }
    let covering: Vec<&Parsed> = (mine.into_iter())
        .filter(|p| p.wildcard || !name.is_wildcard())
        .collect();
    if covering.is_empty() {
        return Err(PersistProblem::NoWildcardPolicy);
    }
    // A record without persistUntil counts for ever.
    if covering.iter().any(|p| p.until.is_none()) {
        return Ok(None);
    }
    match covering.iter().filter_map(|p| p.until).max() {
        Some(at) if at <= now => Err(PersistProblem::Expired { at }),
        latest => Ok(latest),
    }
}

/// One record's text: `issuer; key=value; …`.
#[derive(Debug)]
struct Parsed {
    issuer: String,
    account: Option<String>,
    wildcard: bool,
    until: Option<SystemTime>,
}

fn parse(text: &str) -> Option<Parsed> {
    let mut parts = text.split(';').map(str::trim);
    let issuer = parts.next().filter(|i| !i.is_empty() && !i.contains('='))?;
    let mut parsed = Parsed {
        issuer: issuer.to_string(),
        account: None,
        wildcard: false,
        until: None,
    };
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "accounturi" => parsed.account = Some(value.to_string()),
            "policy" => parsed.wildcard |= value.eq_ignore_ascii_case("wildcard"),
            "persistuntil" => {
                // An unreadable time is taken as passed: the CA would not honour it either.
                let seconds = value.parse::<u64>().unwrap_or(0);
                parsed.until = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
            }
            _ => {}
        }
    }
    Some(parsed)
}

/// Domain names compare without case and without a final dot.
fn same_domain(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

fn record(issuer: &str, account: &str, name: &DomainName) -> PersistRecord {
    let base = name.as_str().trim_start_matches("*.");
    let policy = if name.is_wildcard() {
        "; policy=wildcard"
    } else {
        ""
    };
    PersistRecord {
        fqdn: format!("_validation-persist.{base}."),
        value: format!("{issuer}; accounturi={account}{policy}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "https://ca.example/acct/1";

    fn identity() -> PersistIdentity {
        PersistIdentity {
            issuers: vec!["letsencrypt.org".into(), "le.example".into()],
            account: ACCOUNT.into(),
        }
    }

    fn judged(name: &str, values: &[&str]) -> Result<Option<SystemTime>, PersistProblem> {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        judge(&identity(), &DomainName::parse(name).unwrap(), &values, now)
    }

    #[test]
    fn the_record_certkeeper_prints_is_accepted() {
        let name = DomainName::parse("media.example.com").unwrap();
        let value = identity().record(&name, &[]).value;
        assert_eq!(judged("media.example.com", &[&value]), Ok(None));
        // Any of the CA's issuer names, in any case, spaces and all.
        let loose = format!("LE.example. ;  AccountURI={ACCOUNT} ; persistUntil=2100000000");
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(2_100_000_000);
        assert_eq!(judged("media.example.com", &[&loose]), Ok(Some(until)));
    }

    #[test]
    fn each_wrong_record_is_named_with_its_fix() {
        let ours = format!("letsencrypt.org; accounturi={ACCOUNT}");
        let lapsed = format!("{ours}; persistUntil=1000");
        let cases = [
            ("media.example.com", vec![], PersistProblem::Missing),
            (
                "media.example.com",
                vec!["pki.goog; accounturi=x"],
                PersistProblem::OtherIssuer {
                    found: vec!["pki.goog".into()],
                },
            ),
            (
                "media.example.com",
                vec!["letsencrypt.org; accounturi=https://ca.example/acct/2"],
                PersistProblem::OtherAccount {
                    found: "https://ca.example/acct/2".into(),
                },
            ),
            (
                "*.example.com",
                vec![ours.as_str()],
                PersistProblem::NoWildcardPolicy,
            ),
            (
                "media.example.com",
                vec![lapsed.as_str()],
                PersistProblem::Expired {
                    at: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
                },
            ),
        ];
        for (name, values, problem) in cases {
            assert_eq!(judged(name, &values), Err(problem.clone()), "{values:?}");
            let name = DomainName::parse(name).unwrap();
            let sentence = problem.sentence(&identity(), &name, &[]);
            assert!(
                sentence.contains("IN TXT \"letsencrypt.org; accounturi=https://ca.example/acct/1"),
                "{sentence}"
            );
        }
    }

    #[test]
    fn one_good_record_among_others_is_enough() {
        let good = format!("letsencrypt.org; accounturi={ACCOUNT}; policy=wildcard");
        let values = [
            "pki.goog; accounturi=x",
            "letsencrypt.org; accounturi=y",
            &good,
        ];
        assert_eq!(judged("*.example.com", &values), Ok(None));
    }

    #[test]
    fn a_wildcard_name_asks_for_the_wildcard_policy_at_its_base_name() {
        let plain = DomainName::parse("media.example.com").unwrap();
        let wildcard = DomainName::parse("*.example.com").unwrap();
        let account = "https://ca.example/acct/1";
        assert_eq!(
            record("letsencrypt.org", account, &plain),
            PersistRecord {
                fqdn: "_validation-persist.media.example.com.".into(),
                value: "letsencrypt.org; accounturi=https://ca.example/acct/1".into(),
            }
        );
        assert_eq!(
            record("letsencrypt.org", account, &wildcard),
            PersistRecord {
                fqdn: "_validation-persist.example.com.".into(),
                value: "letsencrypt.org; accounturi=https://ca.example/acct/1; policy=wildcard"
                    .into(),
            }
        );
        // One record does for a base name and its wildcard.
        let base = DomainName::parse("example.com").unwrap();
        let both = [base.clone(), wildcard.clone()];
        assert_eq!(
            identity().record(&base, &both),
            identity().record(&wildcard, &both)
        );
        assert!(
            identity()
                .record(&base, &both)
                .value
                .ends_with("policy=wildcard")
        );
    }
}
