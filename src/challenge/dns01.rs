//! DNS-01: publish `_acme-challenge` TXT records through RFC 2136 (TSIG-signed dynamic UPDATE)
//! or an exec hook, wait until the authoritative servers answer them, and remove them after.
//!
//! It knows nothing of orders: the order flow hands it names and values.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::rdata::TXT;
use hickory_net::proto::rr::{Name, RData, Record, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;

use crate::config::{Dns01Config, Dns01Provider, TsigAlgorithm};
use crate::deploy::hook::{self, HookError};
use crate::net::dns::{Answer, Dns};

const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Dns01Error {
    #[error("cannot publish the TXT record {fqdn}: {source}")]
    Publish {
        fqdn: String,
        /// Boxed: the DNS client's error is large, and this travels inside every ACME error.
        #[source]
        source: Box<PublishError>,
    },
    #[error(
        "the TXT record {fqdn} is not visible on {server} after {}s ({seen}); raise \
         dns01.propagation_timeout_secs or check the zone's secondaries",
        waited.as_secs()
    )]
    NotPropagated {
        fqdn: String,
        server: SocketAddr,
        waited: Duration,
        seen: String,
    },
    #[error(
        "cannot find the authoritative name servers of {zone}: {reason}; set dns01.check_servers"
    )]
    NameServers { zone: String, reason: String },
    #[error(transparent)]
    Resolver(#[from] crate::net::dns::DnsError),
}

/// Why one TXT record could not be added or removed, worded with what to check.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{server} did not answer the UPDATE within {}s", UPDATE_TIMEOUT.as_secs())]
    NoAnswer { server: SocketAddr },
    #[error("{0}")]
    Name(#[source] hickory_net::proto::ProtoError),
    #[error("{0}")]
    Key(#[source] hickory_net::proto::dnssec::DnsSecError),
    #[error(
        "{server} refused the UPDATE as not authorized (NOTAUTH): check dns01.key_name, the \
         secret and that the zone allows updates with this key"
    )]
    NotAuthorized { server: SocketAddr },
    #[error("{server} refused the UPDATE (REFUSED): allow updates for {zone} with this key")]
    Refused { server: SocketAddr, zone: String },
    #[error("{fqdn} is not in zone {zone} (NOTZONE): set dns01.zone")]
    NotInZone { fqdn: String, zone: String },
    #[error("{server} answered {code}")]
    Answered {
        server: SocketAddr,
        code: ResponseCode,
    },
    /// A server that rejects our signature answers unsigned (or with a truncated MAC), which
    /// the client cannot verify: the cause is nearly always the key.
    #[error(
        "{server} did not accept the TSIG signature (it answered: {source}); check \
         dns01.key_name, the secret in dns01.key_file and dns01.key_algorithm against the \
         server's key"
    )]
    SignatureRefused {
        server: SocketAddr,
        source: hickory_net::NetError,
    },
    #[error("no usable answer from {server}: {source}")]
    Unusable {
        server: SocketAddr,
        source: hickory_net::NetError,
    },
    #[error("{command} {action} failed ({status}): {stderr}")]
    HookFailed {
        command: String,
        action: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{command} {action} did not finish within {}s", HOOK_TIMEOUT.as_secs())]
    HookTimeout {
        command: String,
        action: &'static str,
    },
    #[error("cannot run {command}: {source}")]
    HookStart {
        command: String,
        source: std::io::Error,
    },
}

/// A TXT record published for one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtRecord {
    pub fqdn: String,
    pub value: String,
}

pub struct Dns01 {
    config: Dns01Config,
    resolver: Dns,
}

impl Dns01 {
    pub fn new(config: Dns01Config) -> Result<Self, Dns01Error> {
        // CNAME delegation and name-server discovery go through the check servers when given
        // (a test or split-horizon setup), else the system's resolver.
        let resolver = Dns::new(&config.check_servers).map_err(Dns01Error::Resolver)?;
        Ok(Self { config, resolver })
    }

    /// `_acme-challenge.NAME` for an identifier (a wildcard's base name), following a CNAME
    /// delegation (acme-dns style) if there is one.
    pub async fn record_name(&self, identifier: &str) -> String {
        let base = identifier.trim_start_matches("*.");
        let name = format!("_acme-challenge.{base}");
        match self.resolver.cname(&name).await {
            Some(target) => {
                tracing::info!(%name, %target, "following the CNAME delegation of the challenge record");
                target
            }
            None => name,
        }
    }

    pub async fn present(&self, record: &TxtRecord) -> Result<(), Dns01Error> {
        self.change(record, true).await
    }

    pub async fn cleanup(&self, record: &TxtRecord) -> Result<(), Dns01Error> {
        self.change(record, false).await
    }

    async fn change(&self, record: &TxtRecord, add: bool) -> Result<(), Dns01Error> {
        let result = match &self.config.provider {
            Dns01Provider::Rfc2136 {
                server,
                zone,
                key_name,
                algorithm,
                secret,
            } => {
                let key = Tsig {
                    name: key_name,
                    algorithm: *algorithm,
                    secret,
                };
                let update = rfc2136_update(*server, zone, &key, record, self.config.ttl, add);
                match tokio::time::timeout(UPDATE_TIMEOUT, update).await {
                    Ok(result) => result,
                    Err(_) => Err(PublishError::NoAnswer { server: *server }),
                }
            }
            Dns01Provider::Exec { command } => {
                let action = if add { "present" } else { "cleanup" };
                run_hook(command, action, record).await
            }
        };
        result.map_err(|source| Dns01Error::Publish {
            fqdn: record.fqdn.clone(),
            source: Box::new(source),
        })
    }

    /// Waits until every authoritative server (or every configured check server) answers
    /// every record's value, polling quickly at first.
    pub async fn wait_until_visible(&self, records: &[TxtRecord]) -> Result<(), Dns01Error> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let servers = match self.config.check_servers.is_empty() {
            false => self.config.check_servers.clone(),
            true => self.authoritative_servers(&first.fqdn).await?,
        };
        let started = Instant::now();
        for server in servers {
            let dns = Dns::new(&[server]).map_err(Dns01Error::Resolver)?;
            for record in records {
                let mut pause = Duration::from_millis(20);
                loop {
                    let answer = dns.txt(&record.fqdn).await;
                    if matches!(&answer, Answer::Found(values) if values.contains(&record.value)) {
                        break;
                    }
                    if started.elapsed() >= self.config.propagation_timeout {
                        return Err(Dns01Error::NotPropagated {
                            fqdn: record.fqdn.clone(),
                            server,
                            waited: started.elapsed(),
                            seen: match answer {
                                Answer::Found(values) => format!("it answers {values:?}"),
                                other => format!("it answers {other}"),
                            },
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
        Ok(())
    }

    /// The addresses (port 53) of the name servers of the zone holding `fqdn`.
    async fn authoritative_servers(&self, fqdn: &str) -> Result<Vec<SocketAddr>, Dns01Error> {
        let zone = match &self.config.provider {
            Dns01Provider::Rfc2136 { zone, .. } => zone.clone(),
            Dns01Provider::Exec { .. } => fqdn.to_string(),
        };
        // Walk up from the name until a label has NS records: that is the zone's apex.
        let mut candidate = zone.as_str();
        loop {
            if let Answer::Found(hosts) = self.resolver.name_servers(candidate).await {
                let mut servers = Vec::new();
                for host in hosts {
                    for v6 in [false, true] {
                        if let Answer::Found(ips) = self.resolver.addresses(&host, v6).await {
                            servers.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, 53)));
                        }
                    }
                }
                if servers.is_empty() {
                    return Err(Dns01Error::NameServers {
                        zone: candidate.to_string(),
                        reason: "its name servers have no addresses".into(),
                    });
                }
                return Ok(servers);
            }
            match candidate.split_once('.') {
                Some((_, parent)) if parent.contains('.') => candidate = parent,
                _ => {
                    return Err(Dns01Error::NameServers {
                        zone,
                        reason: "no NS records found".into(),
                    });
                }
            }
        }
    }
}

struct Tsig<'a> {
    name: &'a str,
    algorithm: TsigAlgorithm,
    secret: &'a [u8],
}

/// Adds (or deletes) one TXT value with a TSIG-signed UPDATE; `append` keeps other values, so a
/// name and its wildcard can share one record name.
async fn rfc2136_update(
    server: SocketAddr,
    zone: &str,
    key: &Tsig<'_>,
    record: &TxtRecord,
    ttl: u32,
    add: bool,
) -> Result<(), PublishError> {
    let algorithm = match key.algorithm {
        TsigAlgorithm::HmacSha256 => hickory_net::proto::rr::rdata::tsig::TsigAlgorithm::HmacSha256,
        TsigAlgorithm::HmacSha384 => hickory_net::proto::rr::rdata::tsig::TsigAlgorithm::HmacSha384,
        TsigAlgorithm::HmacSha512 => hickory_net::proto::rr::rdata::tsig::TsigAlgorithm::HmacSha512,
    };
    let fqdn = |name: &str| {
        Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).map_err(PublishError::Name)
    };
    let signer = TSigner::new(key.secret.to_vec(), algorithm, fqdn(key.name)?, 300)
        .map_err(PublishError::Key)?;
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_signer(Some(signer))
        .build();
    let (mut client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    let background = tokio::spawn(background);
    let txt = Record::from_rdata(
        fqdn(&record.fqdn)?,
        ttl,
        RData::TXT(TXT::new(vec![record.value.clone()])),
    );
    let response = if add {
        client.append(txt, fqdn(zone)?, false).await
    } else {
        client.delete_by_rdata(txt, fqdn(zone)?).await
    };
    background.abort();
    match response {
        Ok(response) if response.metadata.response_code == ResponseCode::NoError => Ok(()),
        Ok(response) => Err(match response.metadata.response_code {
            ResponseCode::NotAuth => PublishError::NotAuthorized { server },
            ResponseCode::Refused => PublishError::Refused {
                server,
                zone: zone.to_string(),
            },
            ResponseCode::NotZone => PublishError::NotInZone {
                fqdn: record.fqdn.clone(),
                zone: zone.to_string(),
            },
            code => PublishError::Answered { server, code },
        }),
        Err(source)
            if source.to_string().contains("HMAC") || source.to_string().contains("TSIG") =>
        {
            Err(PublishError::SignatureRefused { server, source })
        }
        Err(source) => Err(PublishError::Unusable { server, source }),
    }
}

/// `COMMAND present|cleanup FQDN VALUE`, bounded in time.
async fn run_hook(
    command: &std::path::Path,
    action: &'static str,
    record: &TxtRecord,
) -> Result<(), PublishError> {
    let mut child = tokio::process::Command::new(command);
    child.args([action, &record.fqdn, &record.value]);
    let command = command.display().to_string();
    match hook::run(child, None, HOOK_TIMEOUT).await {
        Ok((status, _)) if status.success() => Ok(()),
        Ok((status, stderr)) => Err(PublishError::HookFailed {
            command,
            action,
            status,
            stderr,
        }),
        Err(HookError::Timeout) => Err(PublishError::HookTimeout { command, action }),
        Err(HookError::Start(source)) => Err(PublishError::HookStart { command, source }),
    }
}
