//! This host's public address, as a STUN server sees it (a binding request, RFC 5389/8489):
//! behind a NAT, the address the router's masquerade gives it, which is what DNS must point at.
//!
//! Hand-written on purpose: a binding request is one 20-byte datagram and the answer one
//! attribute to read; the STUN crates carry TURN, ICE and their dependencies for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const MAGIC_COOKIE: u32 = 0x2112_A442;
const MAPPED_ADDRESS: u16 = 0x0001;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// Each try waits this long for an answer (UDP may lose the datagram).
const TRY_TIMEOUT: Duration = Duration::from_millis(700);
const TRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum StunError {
    #[error("STUN server {server}: cannot resolve it: {source}")]
    Resolve {
        server: String,
        source: std::io::Error,
    },
    #[error("STUN server {server}: cannot resolve it: no address")]
    NoAddress { server: String },
    #[error("STUN server {server} did not answer ({TRIES} tries of {}ms): is UDP to it blocked?", TRY_TIMEOUT.as_millis())]
    NoAnswer { server: String },
    #[error("STUN server {server}: {source}")]
    Socket {
        server: String,
        source: std::io::Error,
    },
    #[error("STUN server {server} answered something that is not a binding response")]
    Garbled { server: String },
}

/// The address `server` ("HOST:PORT") sees this host's datagrams come from.
pub async fn public_address(server: &str) -> Result<IpAddr, StunError> {
    let server_name = || server.to_string();
    let target = tokio::net::lookup_host(server)
        .await
        .map_err(|source| StunError::Resolve {
            server: server_name(),
            source,
        })?
        .next()
        .ok_or_else(|| StunError::NoAddress {
            server: server_name(),
        })?;
    let socket_error = |source| StunError::Socket {
        server: server_name(),
        source,
    };
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(socket_error)?;
    socket.connect(target).await.map_err(socket_error)?;
    let transaction: [u8; 12] = std::array::from_fn(|_| fastrand::u8(..));
    let request = binding_request(&transaction);
    let mut buffer = [0u8; 1024];
    let mut garbled = false;
    for _ in 0..TRIES {
        socket.send(&request).await.map_err(socket_error)?;
        let deadline = tokio::time::Instant::now() + TRY_TIMEOUT;
        // Stray datagrams (an answer to an earlier try) are skipped until the deadline.
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await {
            let length = received.map_err(socket_error)?;
            match mapped_address(&buffer[..length], &transaction) {
                Some(address) => return Ok(address),
                None => garbled = true,
            }
        }
    }
    let server = server.to_string();
    Err(match garbled {
        true => StunError::Garbled { server },
        false => StunError::NoAnswer { server },
    })
}

fn binding_request(transaction: &[u8; 12]) -> Vec<u8> {
    let mut request = Vec::with_capacity(20);
    request.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
    request.extend_from_slice(&0u16.to_be_bytes());
    request.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    request.extend_from_slice(transaction);
    request
}

/// The (XOR-)MAPPED-ADDRESS of a binding success for `transaction`; `None` for anything else.
fn mapped_address(message: &[u8], transaction: &[u8; 12]) -> Option<IpAddr> {
    let word = |at: usize| {
        Some(u16::from_be_bytes([
            *message.get(at)?,
            *message.get(at + 1)?,
        ]))
    };
    if word(0)? != BINDING_SUCCESS
        || message.get(4..8)? != MAGIC_COOKIE.to_be_bytes()
        || message.get(8..20)? != transaction
    {
        return None;
    }
    let end = (20 + usize::from(word(2)?)).min(message.len());
    let (mut at, mut plain) = (20, None);
    while at + 4 <= end {
        let (kind, length) = (word(at)?, usize::from(word(at + 2)?));
        let value = message.get(at + 4..at + 4 + length)?;
        match kind {
            XOR_MAPPED_ADDRESS => return address(value, Some(transaction)),
            MAPPED_ADDRESS => plain = address(value, None),
            _ => {}
        }
        at += 4 + length.div_ceil(4) * 4;
    }
    plain
}

/// An address attribute's IP; XORed with the cookie (and transaction, for IPv6) when `xor`.
fn address(value: &[u8], xor: Option<&[u8; 12]>) -> Option<IpAddr> {
    let mut mask = [0u8; 16];
    if let Some(transaction) = xor {
        mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        mask[4..].copy_from_slice(transaction);
    }
    let unmask = |bytes: &[u8]| -> Vec<u8> { bytes.iter().zip(mask).map(|(b, m)| b ^ m).collect() };
    match value.get(1)? {
        0x01 => {
            let ip: [u8; 4] = unmask(value.get(4..8)?).try_into().ok()?;
            Some(IpAddr::V4(ip.into()))
        }
        0x02 => {
            let ip: [u8; 16] = unmask(value.get(4..20)?).try_into().ok()?;
            Some(IpAddr::V6(ip.into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(transaction: &[u8; 12], kind: u16, value: &[u8]) -> Vec<u8> {
        let mut message = Vec::new();
        message.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
        message.extend_from_slice(&((4 + value.len()) as u16).to_be_bytes());
        message.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        message.extend_from_slice(transaction);
        message.extend_from_slice(&kind.to_be_bytes());
        message.extend_from_slice(&(value.len() as u16).to_be_bytes());
        message.extend_from_slice(value);
        message
    }

    #[test]
    fn reads_an_xor_mapped_ipv4_address() {
        let transaction = [7u8; 12];
        // 203.0.113.10 XOR 0x2112A442 (0 XOR 0x12 is 0x12), port 3478 XOR 0x2112.
        let ip = [203 ^ 0x21, 0x12, 113 ^ 0xA4, 10 ^ 0x42];
        let value = [0, 1, 0x0d ^ 0x21, 0x96 ^ 0x12, ip[0], ip[1], ip[2], ip[3]];
        let message = response(&transaction, XOR_MAPPED_ADDRESS, &value);
        assert_eq!(
            mapped_address(&message, &transaction),
            Some(IpAddr::V4([203, 0, 113, 10].into()))
        );
    }

    #[test]
    fn refuses_another_transaction_and_truncated_messages() {
        let transaction = [7u8; 12];
        let value = [0, 1, 0, 0, 1, 2, 3, 4];
        let message = response(&transaction, MAPPED_ADDRESS, &value);
        assert_eq!(
            mapped_address(&message, &transaction),
            Some(IpAddr::V4([1, 2, 3, 4].into()))
        );
        assert_eq!(mapped_address(&message, &[8u8; 12]), None);
        for cut in 0..message.len() {
            let _ = mapped_address(&message[..cut], &transaction);
        }
    }
}
