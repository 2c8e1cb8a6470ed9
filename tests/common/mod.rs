//! The shared test harness: real Debian `pebble` and `pebble-challtestsrv` processes on free
//! loopback ports, and the real `certkeeper` binary driven through its command line.
//!
//! Pebble resolves every name through challtestsrv, which answers 127.0.0.1, so pebble really
//! fetches each HTTP-01 token from certkeeper's listener. Every child is killed on drop, and
//! every wait is bounded.
//!
//! Each peer has its own file (pebble, certkeeper, nginx, bind, etcd, acme2certifier, the
//! hostile CA proxy, network namespaces, systemd containers, the Debian package); this one
//! keeps what they share: ports, bounded waits, HTTPS requests, test certificates.
#![allow(dead_code)]

pub mod acme2certifier;
pub mod bind;
pub mod certkeeper;
pub mod etcd;
pub mod hostile;
pub mod netlab;
pub mod nginx;
pub mod package;
pub mod pebble;
pub mod programs;
pub mod systemd;

// The peers by name; not every benchmark that includes this harness uses each.
#[allow(unused_imports)]
pub use acme2certifier::Acme2certifier;
#[allow(unused_imports)]
pub use bind::Bind;
pub use certkeeper::Certkeeper;
#[allow(unused_imports)]
pub use nginx::Nginx;
#[allow(unused_imports)]
pub use package::{debian_package, debian_package_as};
pub use pebble::Pebble;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;

pub use programs::{program, require};

pub const BIN: &str = env!("CARGO_BIN_EXE_certkeeper");

/// A free loopback port, bound and released. Taken below the kernel's ephemeral range
/// (32768 and up), where outgoing connections get their ports: a port the kernel hands out
/// with `:0` may become the local end of some test's connection before a server binds it.
/// Never the same port twice in one test process: two tests running side by side could
/// otherwise both find one port free before either binds it.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        let port = fastrand::u16(20_000..32_000);
        if !handed_out.contains(&port)
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000 after 200 tries")
}

/// Waits (bounded by `limit`, polling every 50 ms) until `ready` holds; on timeout fails with
/// `what` and whatever `explain` shows (a log, mostly).
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
    explain: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}\n{}",
            explain()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the process `pid` itself holds a listening TCP socket on `port` (in its own network
/// namespace): not merely whether something answers there, which may be another process.
pub fn process_listens(pid: u32, port: u16) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: Vec<String> = fds
        .flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_string())
        })
        .collect();
    let wanted = format!(":{port:04X}");
    ["tcp", "tcp6"].iter().any(|table| {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is fields[1] ("0100007F:36B0"), st fields[3] (0A: LISTEN), inode
            // fields[9].
            fields.len() > 9
                && fields[1].ends_with(&wanted)
                && fields[3] == "0A"
                && sockets.iter().any(|inode| inode == fields[9])
        })
    })
}

/// The text of the file at `path`, or nothing (a log not written yet).
pub fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Kills its process on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA and a leaf for 127.0.0.1/localhost, for pebble's own HTTPS listener.
pub fn write_tls_identity(root: &Path, cert: &Path, key: &Path) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "certkeeper test TLS root");
    ca.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    leaf.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let leaf_cert = leaf
        .signed_by(&leaf_key, &Issuer::new(ca, ca_key))
        .expect("leaf cert");
    fs::write(root, ca_cert.pem()).expect("write root");
    fs::write(cert, leaf_cert.pem()).expect("write cert");
    fs::write(key, leaf_key.serialize_pem()).expect("write key");
}

/// A root and a leaf for `name` that expired an hour ago, written under `dir`: (root,
/// fullchain, key). Made so, not waited for: a short lifetime raced by a loaded machine is
/// not a test.
pub fn expired_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let now = time::OffsetDateTime::now_utc();
    root_signed_certificate(
        dir,
        name,
        now - time::Duration::days(2),
        now - time::Duration::hours(1),
    )
}

/// A root and a leaf for `name` it signed directly (as mkcert and small private CAs do),
/// valid from `not_before` to `not_after`: (root, leaf, key) written under `dir`.
pub fn root_signed_certificate(
    dir: &Path,
    name: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> (PathBuf, PathBuf, PathBuf) {
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("certkeeper test root for {name}"),
    );
    ca.not_before = now - time::Duration::days(10);
    ca.not_after = now + time::Duration::days(10);
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec![name.to_string()]).expect("leaf params");
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf = leaf
        .signed_by(&key, &Issuer::new(ca, ca_key))
        .expect("leaf cert");
    let paths = (
        dir.join(format!("{name}.root.pem")),
        dir.join(format!("{name}.fullchain.pem")),
        dir.join(format!("{name}.key.pem")),
    );
    fs::write(&paths.0, ca_cert.pem()).expect("write root");
    fs::write(&paths.1, leaf.pem()).expect("write leaf");
    fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after 15 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTPS GET over rustls, trusting only `root`.
pub fn https_get(port: u16, path: &str, root: &Path) -> String {
    https_get_named(port, "127.0.0.1", path, root)
}

/// GET `path` over HTTPS from 127.0.0.1:`port`, asking for and verifying `name` against `root`.
pub fn https_get_named(port: u16, name: &str, path: &str, root: &Path) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    https_exchange(port, name, &request, root)
}

/// POST `body` (JSON) to `path` over HTTPS on 127.0.0.1:`port`, verified against `root`.
pub fn https_post(port: u16, path: &str, body: &str, root: &Path) -> String {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: certkeeper-tests\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    https_exchange(port, "127.0.0.1", &request, root)
}

/// Sends `request` (whole, head and body) over TLS to `name` on 127.0.0.1:`port`; the answer's
/// body (or the whole answer when it has no head).
fn https_exchange(port: u16, name: &str, request: &str, root: &Path) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = fs::read(root).expect("read root");
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("root pem")).expect("add root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(name.to_string()).expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("tls");
    let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(request.as_bytes()).expect("send");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(text)
}

/// How many samples a benchmark takes: BENCH_N, else 20 (1 to `most`).
pub fn bench_n(most: usize) -> usize {
    std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .clamp(1, most)
}

/// The median of `samples` (benchmarks).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A plain HTTP GET on loopback (bounded); the whole response, or empty when nothing answers.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// Signals a child process (SIGTERM, SIGHUP).
pub fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).expect("send signal");
}

/// Whether `key_pem` is the private key of the leaf in `chain_pem`, checked as a TLS server would.
pub fn key_matches(chain_pem: &[u8], key_pem: &[u8]) -> bool {
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let Ok(key) = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem) else {
        return false;
    };
    if chain.is_empty() {
        return false;
    }
    let provider = rustls::crypto::ring::default_provider();
    let Ok(signing) = provider.key_provider.load_private_key(key) else {
        return false;
    };
    rustls::sign::CertifiedKey::new(chain, signing)
        .keys_match()
        .is_ok()
}

/// For tests that need root (network namespaces, packet filters, mounts): true when running
/// as root. Without root the test fails loudly, unless CERTKEEPER_SKIP_ROOT_TESTS is set, in
/// which case it says it is skipped and returns false.
pub fn require_root(test: &str, why: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var_os("CERTKEEPER_SKIP_ROOT_TESTS").is_some() {
        eprintln!("SKIPPED {test}: needs root ({why})");
        return false;
    }
    panic!(
        "{test} needs root ({why}); run as root, or set CERTKEEPER_SKIP_ROOT_TESTS=1 to skip it knowingly"
    );
}
