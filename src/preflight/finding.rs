//! What the pre-flight says: one finding per thing it looked at, with a severity and a
//! sentence an operator can act on.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

impl Severity {
    /// How a line of output marks it.
    pub fn mark(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        }
    }

    /// As monitoring checks count: 0 ok, 1 warning, 2 failure.
    pub fn level(self) -> u8 {
        match self {
            Severity::Ok => 0,
            Severity::Warn => 1,
            Severity::Fail => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Dns,
    Address,
    Port,
    Reachability,
    Clock,
    /// Cluster mode: etcd and the cluster secret.
    Cluster,
    /// TLS-ALPN-01: port 443 answered by certkeeper's responder.
    #[serde(rename = "tls-alpn")]
    TlsAlpn,
    /// A `verify` endpoint serves the deployed certificate.
    Served,
    /// DNS-PERSIST-01: the name's record names this CA and account.
    #[serde(rename = "dns-persist")]
    Persist,
}

impl Check {
    /// As the table's CHECK column shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Dns => "dns",
            Check::Address => "address",
            Check::Port => "port",
            Check::Reachability => "reachability",
            Check::Clock => "clock",
            Check::Cluster => "cluster",
            Check::TlsAlpn => "tls-alpn",
            Check::Served => "served",
            Check::Persist => "dns-persist",
        }
    }
}

/// One thing the check found, in words an operator can act on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub name: Option<String>,
    pub address: Option<IpAddr>,
    pub check: Check,
    pub severity: Severity,
    pub message: String,
}

impl Finding {
    /// A finding about `name` (at `address`, when it is about one address).
    pub fn about(
        name: &str,
        address: Option<IpAddr>,
        check: Check,
        severity: Severity,
        message: String,
    ) -> Finding {
        Finding {
            name: Some(name.to_string()),
            address,
            check,
            severity,
            message,
        }
    }
}

/// Findings about the clock, from the offset to the CA's `Date` header. A clock behind the
/// CA's by more than a fresh certificate's notBefore tolerates fails: no renewal could be
/// deployed, so none is ordered.
pub fn clock_finding(offset_seconds: i64) -> Finding {
    let seconds = offset_seconds.abs();
    let way = if offset_seconds > 0 {
        "ahead of"
    } else {
        "behind"
    };
    let (severity, message) = if crate::acme::clock_blocks_orders(offset_seconds) {
        (
            Severity::Fail,
            format!(
                "this host's clock is {seconds}s behind the CA's: a certificate issued now is not \
                 valid on this host yet, so certkeeper orders none until the time is fixed \
                 (timedatectl set-ntp true)"
            ),
        )
    } else if seconds > 30 {
        (
            Severity::Warn,
            format!(
                "this host's clock is {seconds}s {way} the CA's: fix the time (timedatectl \
                 set-ntp true); a skewed clock rejects fresh certificates and mistimes renewals"
            ),
        )
    } else {
        (
            Severity::Ok,
            format!(
                "this host's clock is within {}s of the CA's",
                seconds.max(1)
            ),
        )
    };
    Finding {
        name: None,
        address: None,
        check: Check::Clock,
        severity,
        message,
    }
}
