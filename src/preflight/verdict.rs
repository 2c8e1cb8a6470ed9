//! What the pre-flight's findings come to: one verdict per name and address family, and the
//! wording of a reachability failure behind a NAT.

use super::*;

/// The pre-flight's verdict on one name and address family ("ipv4", "ipv6", or "dns" when
/// no address was found), as recorded before an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub name: String,
    pub family: String,
    pub ok: bool,
    /// The finding's sentence: the failure and its fix, or what passed.
    pub message: String,
}

/// One verdict per address family that `findings` (all about `name`) speak of.
pub(super) fn verdicts(name: &str, findings: &[Finding]) -> Vec<Verdict> {
    let family = |f: &Finding| match f.address {
        Some(IpAddr::V4(_)) => "ipv4",
        Some(IpAddr::V6(_)) => "ipv6",
        None => "dns",
    };
    let mut verdicts: Vec<Verdict> = Vec::new();
    // Address findings back the reachability ones; a reachability finding without an address
    // is a vantage that could not be asked, which says nothing of the name.
    let counted = |f: &&Finding| {
        f.check != Check::Address && !(f.check == Check::Reachability && f.address.is_none())
    };
    for finding in findings.iter().filter(counted) {
        let family = family(finding);
        let ok = finding.severity != Severity::Fail;
        match verdicts.iter_mut().find(|v| v.family == family) {
            Some(verdict) if verdict.ok && !ok => {
                verdict.ok = false;
                verdict.message = finding.message.clone();
            }
            Some(_) => {}
            None => verdicts.push(Verdict {
                name: name.to_string(),
                family: family.to_string(),
                ok,
                message: finding.message.clone(),
            }),
        }
    }
    verdicts
}

/// The reachability verdict at `address`, where DNS points and where this host is seen from
/// outside behind a NAT: a failure there is the router's port forward.
pub(super) fn nat_verdict(
    severity: Severity,
    message: String,
    address: IpAddr,
    port: u16,
) -> (Severity, String) {
    match severity {
        Severity::Fail => (
            Severity::Fail,
            format!(
                "DNS answers {address} and this host is seen from outside as {address} behind a NAT, but port \
                 {port} of {address} does not answer ({}): your router does not forward TCP {port} to this \
                 host: forward it, or configure dns01",
                message.split(':').next().unwrap_or(&message)
            ),
        ),
        _ => (
            severity,
            format!(
                "{message} (through the router's own address: hairpin NAT; the CA's view from outside may differ)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(address: Option<&str>, check: Check, severity: Severity, message: &str) -> Finding {
        Finding {
            name: Some("media.example.com".into()),
            address: address.map(|a| a.parse().unwrap()),
            check,
            severity,
            message: message.into(),
        }
    }

    #[test]
    fn a_family_fails_on_any_vantage_and_an_unasked_vantage_is_no_verdict() {
        let findings = [
            finding(
                Some("192.0.2.7"),
                Check::Address,
                Severity::Ok,
                "an address of this host",
            ),
            finding(
                Some("192.0.2.7"),
                Check::Reachability,
                Severity::Ok,
                "from this host: ok",
            ),
            finding(
                Some("192.0.2.9"),
                Check::Reachability,
                Severity::Fail,
                "from node n1: refused",
            ),
            finding(
                None,
                Check::Reachability,
                Severity::Warn,
                "node n2 could not be asked",
            ),
        ];
        let verdicts = verdicts("media.example.com", &findings);
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert_eq!(verdicts[0].family, "ipv4");
        assert!(!verdicts[0].ok);
        assert_eq!(verdicts[0].message, "from node n1: refused");
    }
}
