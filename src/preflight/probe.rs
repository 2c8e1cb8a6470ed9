//! The CA's requests, made by hand: the HTTP-01 fetch of a probe token (port 80, `Host:` the
//! name, redirects followed, bounded in time and size) and the TLS-ALPN-01 handshake.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::{Preflight, Severity};
use crate::challenge::tls_alpn01::TlsAlpn01;
use crate::net::dns::Answer;
use crate::preflight::tls_probe::Handshake;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_REDIRECTS: usize = 5;

impl Preflight {
    /// The first reason TLS-ALPN-01 cannot succeed for `names`, if there is one: the CA's
    /// `acme-tls/1` handshake on port 443 of each address, answered by `responder` with a
    /// probe certificate whose digest only this check knows.
    pub async fn tls_alpn_blocker(&self, names: &[&str], responder: &TlsAlpn01) -> Option<String> {
        let mut publisher = match responder.publisher() {
            Ok(publisher) => publisher,
            Err(e) => return Some(e.to_string()),
        };
        let mut digests = Vec::with_capacity(names.len());
        for name in names {
            let digest: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
            if let Err(e) = publisher.publish(name, &digest) {
                return Some(e.to_string());
            }
            digests.push(digest);
        }
        // Every name, family and address at once: a dropped port costs one timeout, not one
        // per address.
        let resolved = join_all(names.iter().map(|name| async move {
            let (v4, v6) = tokio::join!(self.addresses(name, false), self.addresses(name, true));
            [v4, v6]
                .into_iter()
                .flat_map(|answer| match answer {
                    Answer::Found(addresses) => addresses,
                    _ => Vec::new(),
                })
                .collect::<Vec<IpAddr>>()
        }))
        .await;
        if let Some((name, _)) = names.iter().zip(&resolved).find(|(_, a)| a.is_empty()) {
            return Some(format!("{name} has no A or AAAA record"));
        }
        let targets: Vec<(&str, IpAddr, &[u8])> = names
            .iter()
            .zip(&resolved)
            .zip(&digests)
            .flat_map(|((name, addresses), digest)| {
                addresses.iter().map(|&a| (*name, a, digest.as_slice()))
            })
            .collect();
        let port = self.tls_port;
        let handshakes = join_all(targets.iter().map(|&(name, address, _)| {
            crate::preflight::tls_probe::handshake(SocketAddr::new(address, port), name)
        }))
        .await;
        targets.iter().zip(handshakes).find_map(
            |(&(_, address, digest), handshake)| match handshake {
                Handshake::Answered(Some(found)) if found == digest => None,
                Handshake::Answered(_) => Some(format!(
                    "port {port} on {address} is answered by another TLS server, not certkeeper's \
                     tls-alpn-01 responder: a web or media server holds the port, or a proxy does \
                     not route acme-tls/1 to certkeeper"
                )),
                Handshake::Refused => Some(format!(
                    "port {port} on {address} refused the connection: open it in the firewall (and \
                     forward it on a NAT), or point daemon.tls_alpn_listen at it"
                )),
                Handshake::Timeout => Some(format!(
                    "port {port} on {address} timed out: a firewall drops it, a NAT has no port \
                     forward, or the ISP blocks it"
                )),
                Handshake::Failed(why) => Some(format!("port {port} on {address}: {why}")),
            },
        )
    }

    /// Fetches the probe token from `address` as the CA would, following redirects.
    pub(super) async fn probe(
        &self,
        name: &str,
        address: IpAddr,
        token: &str,
        expected: &str,
    ) -> (Severity, String) {
        let port = self.port;
        let mut target = (
            SocketAddr::new(address, port),
            name.to_string(),
            format!("/.well-known/acme-challenge/{token}"),
        );
        for _ in 0..=MAX_REDIRECTS {
            let (socket, host, path) = &target;
            if self.outside_only
                && let Some(kind) = not_public(socket.ip())
            {
                return (
                    Severity::Fail,
                    format!(
                        "refused to fetch from {} ({kind}): a probe server fetches from public addresses only",
                        socket.ip()
                    ),
                );
            }
            let response = match fetch(*socket, host, path).await {
                Ok(response) => response,
                Err(FetchError::Refused) => {
                    return (
                        Severity::Fail,
                        format!(
                            "port {port} on {} refused the connection: nothing listens there, or a firewall rejects \
                             it; open it in the firewall (and forward it on a NAT) or use dns-01",
                            socket.ip()
                        ),
                    );
                }
                Err(FetchError::Timeout) => {
                    return (
                        Severity::Fail,
                        format!(
                            "port {port} on {} timed out: a firewall drops it, a NAT has no port forward, or the ISP \
                             blocks port {port}; open it or use dns-01{}",
                            socket.ip(),
                            if socket.is_ipv6() {
                                " (the CA tries IPv6 first: fix IPv6 or remove the AAAA record)"
                            } else {
                                ""
                            }
                        ),
                    );
                }
                Err(FetchError::Other(why)) => {
                    return (
                        Severity::Fail,
                        format!("port {port} on {}: {why}", socket.ip()),
                    );
                }
            };
            if response.status.is_redirection() {
                let Some(location) = response.location.as_deref() else {
                    return (
                        Severity::Fail,
                        format!("{} answered a redirect without a Location", socket.ip()),
                    );
                };
                match self.redirect_target(location, host).await {
                    Ok(next) => {
                        target = next;
                        continue;
                    }
                    Err(unfollowed) => return (Severity::Warn, unfollowed.to_string()),
                }
            }
            if response.status.is_success() && response.body.trim() == expected {
                return (
                    Severity::Ok,
                    format!(
                        "http://{name}:{port}/ on {address} serves certkeeper's probe token: http-01 can succeed"
                    ),
                );
            }
            let server = response
                .server
                .map(|s| format!(", server \"{s}\""))
                .unwrap_or_default();
            return (
                Severity::Fail,
                format!(
                    "port {port} on {} is answered by another HTTP server (HTTP {}{server}), not certkeeper: \
                     stop it or give certkeeper the port, or use dns-01",
                    socket.ip(),
                    response.status.as_u16()
                ),
            );
        }
        (
            Severity::Fail,
            format!("more than {MAX_REDIRECTS} redirects from {address}: the CA gives up too"),
        )
    }

    async fn redirect_target(
        &self,
        location: &str,
        host: &str,
    ) -> Result<(SocketAddr, String, String), Unfollowed> {
        let unfollowed = |why: fn(String) -> Unfollowed| why(location.to_string());
        let uri: http::Uri = location
            .parse()
            .map_err(|_| unfollowed(Unfollowed::Unreadable))?;
        match uri.scheme_str() {
            None => {
                let address = self.first_address(host).await?;
                Ok((
                    SocketAddr::new(address, self.port),
                    host.to_string(),
                    uri.path().to_string(),
                ))
            }
            Some("http") => {
                let next_host = uri.host().unwrap_or(host).to_string();
                let port = uri.port_u16().unwrap_or(80);
                // The CA follows redirects to ports 80 and 443 only.
                if port != 80 && port != self.port {
                    return Err(unfollowed(Unfollowed::Port));
                }
                let address = self.first_address(&next_host).await?;
                Ok((
                    SocketAddr::new(address, port),
                    next_host,
                    uri.path().to_string(),
                ))
            }
            Some(_) => Err(unfollowed(Unfollowed::Https)),
        }
    }

    async fn first_address(&self, host: &str) -> Result<IpAddr, Unfollowed> {
        for v6 in [false, true] {
            if let Answer::Found(addresses) = self.addresses(host, v6).await
                && let Some(address) = addresses.first()
            {
                return Ok(*address);
            }
        }
        Err(Unfollowed::NoAddress(host.to_string()))
    }
}

/// A redirect the probe does not follow, and what to do about it.
#[derive(Debug, thiserror::Error)]
enum Unfollowed {
    #[error("redirect to an unreadable Location \"{0}\"")]
    Unreadable(String),
    #[error(
        "redirected to {0}: the CA follows redirects only to ports 80 and 443, so it will not \
         follow this one; redirect to port 80 or serve /.well-known/acme-challenge/ without a \
         redirect"
    )]
    Port(String),
    #[error(
        "redirected to {0}: the CA follows redirects to HTTPS, but certkeeper cannot check that \
         one; make sure it serves /.well-known/acme-challenge/ from certkeeper"
    )]
    Https(String),
    #[error("redirected to {0}, which has no address")]
    NoAddress(String),
}

struct Fetched {
    status: http::StatusCode,
    location: Option<String>,
    server: Option<String>,
    body: String,
}

enum FetchError {
    Refused,
    Timeout,
    Other(String),
}

/// One GET with `Host: host`, bounded in time and size.
async fn fetch(socket: SocketAddr, host: &str, path: &str) -> Result<Fetched, FetchError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(socket))
        .await
    {
        Err(_) => return Err(FetchError::Timeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(FetchError::Refused);
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => return Err(FetchError::Timeout),
        Ok(Err(e)) => return Err(FetchError::Other(format!("cannot connect: {e}"))),
        Ok(Ok(stream)) => stream,
    };
    // One small request each way: no wait for a delayed ACK.
    let _ = stream.set_nodelay(true);
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "certkeeper-check")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(String::from)
        };
        let (status, location, server) = (
            response.status(),
            header(http::header::LOCATION),
            header(http::header::SERVER),
        );
        let body = Limited::new(response.into_body(), 16 * 1024)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).to_string())
            .unwrap_or_default();
        driver.abort();
        Ok::<_, String>(Fetched {
            status,
            location,
            server,
            body,
        })
    };
    match tokio::time::timeout(RESPONSE_TIMEOUT, exchange).await {
        Err(_) => Err(FetchError::Other(format!(
            "connected, but no HTTP answer within {}s",
            RESPONSE_TIMEOUT.as_secs()
        ))),
        Ok(Err(why)) => Err(FetchError::Other(format!(
            "connected, but the HTTP exchange failed: {why}"
        ))),
        Ok(Ok(fetched)) => Ok(fetched),
    }
}

pub(super) fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..32)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// Why `ip` is no public address, if it is not: what a probe server must never fetch from.
/// An IPv4 address carried inside an IPv6 one (mapped, compatible, NAT64, 6to4) is judged as
/// the IPv4 address it reaches.
fn not_public(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Ok(Some(v4)) => IpAddr::V4(v4),
            Ok(None) => ip,
            Err(why) => return Some(why),
        },
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_private() => Some("a private network"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() => {
            Some("not a host address")
        }
        // 0.0.0.0/8: "this network", never a destination.
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("not a host address"),
        // 100.64.0.0/10, carrier-grade NAT.
        IpAddr::V4(v4) if v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) => {
            Some("carrier-grade NAT")
        }
        // 198.18.0.0/15, benchmarking networks.
        IpAddr::V4(v4) if v4.octets()[0] == 198 && (18..20).contains(&v4.octets()[1]) => {
            Some("a benchmarking network")
        }
        // 240.0.0.0/4, reserved.
        IpAddr::V4(v4) if v4.octets()[0] >= 240 => Some("reserved"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => Some("not a host address"),
        IpAddr::V6(v6) if v6.is_unique_local() => Some("a private network"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        _ => None,
    }
}

/// The IPv4 address an IPv6 address leads to, when it carries one; an error for tunnels whose
/// end cannot be judged (Teredo) and local-use NAT64.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Result<Option<std::net::Ipv4Addr>, &'static str> {
    let segments = v6.segments();
    let octets = v6.octets();
    let tail = std::net::Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    Ok(match segments {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] if !v6.is_loopback() => {
            match v6.is_unspecified() {
                true => None,
                false => Some(tail),
            }
        }
        // 64:ff9b::/96, the well-known NAT64 prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 64:ff9b:1::/48, NAT64 for local use only.
        [0x64, 0xff9b, 1, ..] => return Err("a local-use NAT64 address"),
        // 2002::/16, 6to4: the IPv4 address follows the prefix.
        [0x2002, ..] => Some(std::net::Ipv4Addr::new(
            octets[2], octets[3], octets[4], octets[5],
        )),
        // 2001::/32, Teredo: a tunnel to wherever its server relays.
        [0x2001, 0, ..] => return Err("a Teredo tunnel address"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_a_probe_server_must_not_fetch_from() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "0.1.2.3",
            "198.18.0.1",
            "198.19.255.1",
            "240.0.0.1",
            "100.64.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001:0:4136:e378::1",
            "fd00::1",
            "fe80::1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(not_public(ip).is_some(), "{refused} must be refused");
        }
        for public in [
            "203.0.113.7",
            "64:ff9b::cb00:7107",
            "2002:cb00:7107::1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert_eq!(not_public(ip), None, "{public} is public");
        }
    }
}
