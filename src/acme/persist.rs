//! DNS-PERSIST-01 (draft-ietf-acme-dns-persist): the one TXT record per name that proves
//! control for every later order of this account at this CA, set once by the operator.
//!
//! `_validation-persist.<name> TXT "<issuer>; accounturi=<account URL>[; policy=wildcard]"`,
//! the issuer being one of the CA's `meta.caaIdentities`.

use super::{AcmeClient, AcmeError};
use crate::names::DomainName;

/// One record to set: where, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistRecord {
    /// `_validation-persist.NAME.`
    pub fqdn: String,
    pub value: String,
}

impl AcmeClient {
    /// The record each of `names` needs at this CA for this account.
    pub async fn persist_records(
        &self,
        names: &[DomainName],
    ) -> Result<Vec<PersistRecord>, AcmeError> {
        let unusable = |reason: String| AcmeError::Persist {
            directory: self.directory().to_string(),
            reason,
        };
        let directory = self
            .http
            .get_json(self.directory())
            .await
            .map_err(unusable)?;
        let issuer = directory["meta"]["caaIdentities"][0]
            .as_str()
            .ok_or_else(|| {
                unusable(
                    "its directory names no caaIdentities, so no dns-persist-01 record can name it"
                        .into(),
                )
            })?
            .to_string();
        let account = self.id();
        Ok(names
            .iter()
            .filter(|name| name.ip().is_none())
            .map(|name| record(&issuer, &account, name))
            .collect())
    }
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
    }
}
