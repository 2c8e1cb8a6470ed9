//! DNS lookups with outcomes an operator can read: an answer, no answer, NXDOMAIN, SERVFAIL
//! or a timeout. Used by the pre-flight check and the DNS-01 propagation wait.
//!
//! Resolvers are built with no cache: a propagation wait must see the zone as it is now.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Found(Vec<T>),
    /// The name exists but has no record of this type.
    NoRecords,
    NxDomain,
    ServFail,
    Refused,
    Timeout,
    Failed(String),
}

impl<T> fmt::Display for Answer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Answer::Found(_) => "an answer",
            Answer::NoRecords => "no record of that type",
            Answer::NxDomain => "NXDOMAIN (the name does not exist)",
            Answer::ServFail => "SERVFAIL (the name server failed)",
            Answer::Refused => "REFUSED",
            Answer::Timeout => "no answer (timeout)",
            Answer::Failed(why) => why,
        })
    }
}

/// Why no resolver could be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "cannot read the system's DNS configuration (/etc/resolv.conf): {0}; set daemon.resolvers"
    )]
    System(#[source] hickory_resolver::net::NetError),
    #[error("cannot build a DNS resolver: {0}")]
    Build(#[source] hickory_resolver::net::NetError),
}

/// A resolver: the system's (`/etc/resolv.conf`) or the given servers.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// `servers` empty: the system's resolvers.
    pub fn new(servers: &[SocketAddr]) -> Result<Self, DnsError> {
        let builder = if servers.is_empty() {
            TokioResolver::builder_tokio().map_err(DnsError::System)?
        } else {
            let name_servers = servers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for connection in &mut server.connections {
                        connection.port = addr.port();
                    }
                    server
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(name_servers),
                TokioRuntimeProvider::default(),
            )
        };
        let mut options = ResolverOpts::default();
        options.cache_size = 0;
        options.timeout = Duration::from_secs(3);
        options.attempts = 2;
        let resolver = builder
            .with_options(options)
            .build()
            .map_err(DnsError::Build)?;
        Ok(Self { resolver })
    }

    /// The records of `record_type` at `name`. A server failure or a timeout is asked once
    /// more: hickory answers SERVFAIL when no reply came in time, and one lost datagram on a
    /// loaded host must not read as a broken zone; a real failure repeats.
    async fn records(&self, name: &str, record_type: RecordType) -> Answer<RData> {
        match self.records_once(name, record_type).await {
            Answer::ServFail | Answer::Timeout => self.records_once(name, record_type).await,
            answer => answer,
        }
    }

    async fn records_once(&self, name: &str, record_type: RecordType) -> Answer<RData> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        match self.resolver.lookup(fqdn, record_type).await {
            Ok(lookup) => {
                let found: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == record_type)
                    .map(|r| r.data.clone())
                    .collect();
                if found.is_empty() {
                    Answer::NoRecords
                } else {
                    Answer::Found(found)
                }
            }
            Err(e) if e.is_nx_domain() => Answer::NxDomain,
            Err(e) if e.is_no_records_found() => Answer::NoRecords,
            Err(e) => {
                let text = e.to_string();
                if matches!(e, hickory_resolver::net::NetError::Timeout)
                    || text.contains("timed out")
                {
                    Answer::Timeout
                } else if text.contains(&ResponseCode::ServFail.to_string()) {
                    Answer::ServFail
                } else if text.contains(&ResponseCode::Refused.to_string()) {
                    Answer::Refused
                } else {
                    Answer::Failed(text)
                }
            }
        }
    }

    /// A (IPv4) or AAAA (IPv6) addresses of `name`.
    pub async fn addresses(&self, name: &str, v6: bool) -> Answer<IpAddr> {
        let record_type = if v6 { RecordType::AAAA } else { RecordType::A };
        map(self.records(name, record_type).await, |data| match data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
    }

    /// TXT values of `name`, each as one string.
    pub async fn txt(&self, name: &str) -> Answer<String> {
        map(
            self.records(name, RecordType::TXT).await,
            |data| match data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|part| String::from_utf8_lossy(part).to_string())
                        .collect(),
                ),
                _ => None,
            },
        )
    }

    /// The CNAME target of `name`, if it has one.
    pub async fn cname(&self, name: &str) -> Option<String> {
        match self.records(name, RecordType::CNAME).await {
            Answer::Found(records) => records.into_iter().find_map(|data| match data {
                RData::CNAME(target) => Some(target.0.to_ascii().trim_end_matches('.').to_string()),
                _ => None,
            }),
            _ => None,
        }
    }

    /// The name servers (host names) of `zone`.
    pub async fn name_servers(&self, zone: &str) -> Answer<String> {
        map(
            self.records(zone, RecordType::NS).await,
            |data| match data {
                RData::NS(ns) => Some(ns.0.to_ascii().trim_end_matches('.').to_string()),
                _ => None,
            },
        )
    }
}

fn map<T>(answer: Answer<RData>, convert: impl Fn(RData) -> Option<T>) -> Answer<T> {
    match answer {
        Answer::Found(records) => {
            let found: Vec<T> = records.into_iter().filter_map(convert).collect();
            if found.is_empty() {
                Answer::NoRecords
            } else {
                Answer::Found(found)
            }
        }
        Answer::NoRecords => Answer::NoRecords,
        Answer::NxDomain => Answer::NxDomain,
        Answer::ServFail => Answer::ServFail,
        Answer::Refused => Answer::Refused,
        Answer::Timeout => Answer::Timeout,
        Answer::Failed(why) => Answer::Failed(why),
    }
}
