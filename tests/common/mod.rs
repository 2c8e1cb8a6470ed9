//! The shared test harness: real Debian `pebble` and `pebble-challtestsrv` processes on free
//! loopback ports, and the real `certkeeper` binary driven through its command line.
//!
//! Pebble resolves every name through challtestsrv, which answers 127.0.0.1, so pebble really
//! fetches each HTTP-01 token from certkeeper's listener. Every child is killed on drop, and
//! every wait is bounded.
#![allow(dead_code)]

pub mod etcd;
pub mod hostile;
pub mod netlab;
pub mod programs;
pub mod systemd;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

pub use programs::{program, require};

pub const BIN: &str = env!("CARGO_BIN_EXE_certkeeper");

/// This tree's Debian package (`scripts/package`, the dev profile), built once for every test
/// that needs it: two builds at once write the same files under `target/`, and one test read
/// the other's half-written package.
pub fn debian_package() -> PathBuf {
    let mut built = PACKAGE.lock().unwrap_or_else(|e| e.into_inner());
    built_package(&mut built)
}

/// This tree's package again (no new build), as version `version`, in `dir`.
pub fn debian_package_as(version: &str, dir: &Path) -> PathBuf {
    let mut built = PACKAGE.lock().unwrap_or_else(|e| e.into_inner());
    built_package(&mut built);
    let root = env!("CARGO_MANIFEST_DIR");
    let repacked = program("cargo")
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--deb-version",
            version,
            "--output",
        ])
        .arg(dir)
        .current_dir(root)
        .output()
        .expect("cargo deb");
    assert!(
        repacked.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&repacked.stderr)
    );
    fs::read_dir(dir)
        .expect("package dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().contains(version))
        .expect("the package")
}

/// Every use of cargo-deb goes through this lock: it empties target/debian/ whenever it packs,
/// even into another directory (two at once left the package test listing a deleted file).
static PACKAGE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// The package built once (kept outside target/debian/, which cargo-deb empties).
fn built_package(built: &mut Option<PathBuf>) -> PathBuf {
    if let Some(deb) = built.as_ref() {
        return deb.clone();
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let output = program("bash")
        .arg(format!("{root}/scripts/package"))
        .args(["--profile", "dev"])
        .output()
        .expect("scripts/package");
    assert!(
        output.status.success(),
        "scripts/package: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let debs: Vec<PathBuf> = fs::read_dir(format!("{root}/target/debian"))
        .expect("target/debian")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let kept = PathBuf::from(format!("{root}/target/tests-package"));
    fs::create_dir_all(&kept).expect("target/tests-package");
    let kept = kept.join(debs[0].file_name().expect("a file name"));
    fs::copy(&debs[0], &kept).expect("keep the package");
    *built = Some(kept.clone());
    kept
}

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

pub struct Pebble {
    pub dir: tempfile::TempDir,
    pub directory_url: String,
    pub management: u16,
    /// The CA that signed pebble's own HTTPS certificate (certkeeper's `acme.extra_root`).
    pub tls_root: PathBuf,
    /// Where pebble's validator connects for HTTP-01: certkeeper must listen here.
    pub http_port: u16,
    /// Where pebble's validator connects for TLS-ALPN-01: certkeeper's responder listens here.
    pub tls_port: u16,
    pub log: PathBuf,
    listen: u16,
    dns: u16,
    /// challtestsrv's management port (where the names pebble resolves are set).
    dns_management: u16,
    /// Overrides challtestsrv as pebble's DNS server.
    dns_server: Option<String>,
    /// challtestsrv first, pebble last.
    children: Vec<Killed>,
    /// The network namespace pebble and challtestsrv run in (`None`: this machine's).
    netns: Option<String>,
    /// Chains to other roots offered beside the default one (`PEBBLE_ALTERNATE_ROOTS`).
    alternate_roots: u32,
    /// Debian sid's pebble (2.10 or later) rather than Debian 12's (2.4).
    current: bool,
}

/// Where `scripts/deps --tests` puts the current pebble from Debian sid.
fn current_pebble(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/pebble-sid/usr/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/deps --tests (it fetches pebble 2.10 or later from Debian sid)",
        path.display()
    );
    path
}

/// A failed test shows what the CA saw: the last lines of pebble's log.
impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = read_log(&self.log);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!(
                "--- the last lines of pebble's log ({}) ---\n{tail}",
                self.log.display()
            );
        }
    }
}

impl Pebble {
    /// Starts challtestsrv and pebble; `validity` makes short-lived certificates.
    pub fn start(validity: Option<Duration>) -> Pebble {
        Self::start_with(validity, None)
    }

    /// A pebble whose validator resolves names through `dns` (a real authoritative server)
    /// instead of challtestsrv.
    pub fn start_with_dns(dns: &str) -> Pebble {
        let mut pebble = Self::start_with(None, None);
        pebble.dns_server = Some(dns.to_string());
        pebble.restart();
        pebble
    }

    /// A pebble that offers each certificate with `n` alternate chains, each to a root of
    /// its own (RFC 8555 §7.4.2).
    pub fn start_with_alternate_roots(n: u32) -> Pebble {
        let mut pebble = Self::start_with(None, None);
        pebble.alternate_roots = n;
        pebble.restart();
        pebble
    }

    /// Like [`Pebble::start`], requiring External Account Binding with this (key id, base64url
    /// HMAC key) when `eab` is given.
    pub fn start_with(validity: Option<Duration>, eab: Option<(&str, &str)>) -> Pebble {
        Self::launch(validity, eab, &[], None::<(&str, &str)>)
    }

    /// A pebble that rejects every order for these domains (and their subdomains).
    pub fn start_refusing(domains: &[&str]) -> Pebble {
        Self::launch(None, None, domains, None::<(&str, &str)>)
    }

    /// Pebble and challtestsrv inside the network namespace `netns` (which must have its
    /// loopback up): a test may filter packets there without touching this machine's.
    pub fn start_in(netns: &str) -> Pebble {
        Self::launch(None, None, &[], Some((netns, "")))
    }

    /// As `start_in`, with every name resolving to ::1 as well as 127.0.0.1 (dual-stack).
    pub fn start_in_dual_stack(netns: &str) -> Pebble {
        Self::launch(None, None, &[], Some((netns, "::1")))
    }

    /// Debian sid's pebble (2.10 or later): ARI with `replaces`, profiles, Retry-After,
    /// dns-persist-01. `profiles` is pebble's `profiles` config (name → description and
    /// validity), `null` for none.
    pub fn start_current(profiles: serde_json::Value) -> Pebble {
        Self::launch_as(None, None, &[], None, Some(profiles))
    }

    /// `program`, run inside this pebble's network namespace if it has one.
    fn command(netns: Option<&str>, name: &str, current: bool) -> Command {
        if current {
            return Command::new(current_pebble(name));
        }
        match netns {
            Some(ns) => {
                let mut command = program("ip");
                command.args(["netns", "exec", ns]).arg(require(name));
                command
            }
            None => program(name),
        }
    }

    /// `inside`: the network namespace to run in, and the IPv6 address every name resolves
    /// to there ("" for none).
    fn launch(
        validity: Option<Duration>,
        eab: Option<(&str, &str)>,
        blocklist: &[&str],
        inside: Option<(&str, &str)>,
    ) -> Pebble {
        Self::launch_as(validity, eab, blocklist, inside, None)
    }

    /// `current`: Debian sid's pebble with these `profiles` (see [`Pebble::start_current`]).
    fn launch_as(
        validity: Option<Duration>,
        eab: Option<(&str, &str)>,
        blocklist: &[&str],
        inside: Option<(&str, &str)>,
        current: Option<serde_json::Value>,
    ) -> Pebble {
        let netns = inside.map(|(netns, _)| netns);
        let default_ipv6 = inside.map_or("", |(_, ipv6)| ipv6);
        if current.is_none() {
            require("pebble");
            require("pebble-challtestsrv");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let tls_root = dir.path().join("tls-root.pem");
        let (cert, key) = (
            dir.path().join("tls-cert.pem"),
            dir.path().join("tls-key.pem"),
        );
        write_tls_identity(&tls_root, &cert, &key);

        let (dns, dns_mgmt) = (free_port(), free_port());
        // challtestsrv 2.10 names its DNS flag -dnsserver and adds DNS over HTTPS (off here).
        let mut challtestsrv = Self::command(netns, "pebble-challtestsrv", current.is_some());
        match current {
            Some(_) => challtestsrv.args(["-dnsserver", &format!("127.0.0.1:{dns}"), "-doh", ""]),
            None => challtestsrv.args(["-dns01", &format!("127.0.0.1:{dns}")]),
        };
        let challtestsrv = challtestsrv
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args([
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv6",
                default_ipv6,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        let challtestsrv = Killed(challtestsrv);

        let (listen, management, http_port) = (free_port(), free_port(), free_port());
        let tls_port = free_port();
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": eab.is_some(),
            "externalAccountMACKeys": eab.map(|(kid, key)| serde_json::json!({ kid: key })).unwrap_or_default(),
            "certificateValidityPeriod": validity.map_or(157_766_400, |v| v.as_secs()),
            "domainBlocklist": blocklist,
        }});
        let mut config = config;
        if let Some(profiles) = current.as_ref().filter(|p| !p.is_null()) {
            config["pebble"]["profiles"] = profiles.clone();
        }
        let config_path = dir.path().join("pebble.json");
        fs::write(&config_path, config.to_string()).expect("write pebble config");
        let log = dir.path().join("pebble.log");
        let mut pebble = Pebble {
            directory_url: format!("https://127.0.0.1:{listen}/dir"),
            management,
            tls_root,
            http_port,
            tls_port,
            log,
            dir,
            listen,
            dns,
            dns_management: dns_mgmt,
            dns_server: None,
            children: vec![challtestsrv],
            netns: netns.map(String::from),
            alternate_roots: 0,
            current: current.is_some(),
        };
        // A port found free may be taken by another test's server before pebble binds it; then
        // pebble exits and the port answers for someone else: move to other ports.
        let mut started = pebble.spawn_pebble();
        for _ in 0..5 {
            if started {
                break;
            }
            pebble.children.pop();
            pebble.move_to_other_ports();
            started = pebble.spawn_pebble();
        }
        assert!(
            started,
            "pebble would not start on free ports; see {}",
            pebble.log.display()
        );
        // Inside a namespace, challtestsrv is up long before pebble has made its CA.
        if pebble.netns.is_none() {
            wait_for_port(dns_mgmt);
        }
        pebble
    }

    fn move_to_other_ports(&mut self) {
        let path = self.dir.path().join("pebble.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("pebble config")).expect("json");
        (self.listen, self.management, self.http_port) = (free_port(), free_port(), free_port());
        config["pebble"]["listenAddress"] = format!("127.0.0.1:{}", self.listen).into();
        config["pebble"]["managementListenAddress"] =
            format!("127.0.0.1:{}", self.management).into();
        config["pebble"]["httpPort"] = self.http_port.into();
        self.tls_port = free_port();
        config["pebble"]["tlsPort"] = self.tls_port.into();
        fs::write(&path, config.to_string()).expect("write pebble config");
        self.directory_url = format!("https://127.0.0.1:{}/dir", self.listen);
    }

    /// Starts pebble; false when it exited instead of listening (its port was taken).
    fn spawn_pebble(&mut self) -> bool {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("pebble log");
        let child = Self::command(self.netns.as_deref(), "pebble", self.current)
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .args([
                "-dnsserver",
                &self
                    .dns_server
                    .clone()
                    .unwrap_or_else(|| format!("127.0.0.1:{}", self.dns)),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every order is validated afresh: a reused authorization would hide the
            // challenge path.
            .env("PEBBLE_AUTHZREUSE", "0")
            .env("PEBBLE_ALTERNATE_ROOTS", self.alternate_roots.to_string())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble");
        self.children.push(Killed(child));
        let deadline = Instant::now() + Duration::from_secs(15);
        let exited = |children: &mut Vec<Killed>| {
            children
                .last_mut()
                .is_some_and(|c| matches!(c.0.try_wait(), Ok(Some(_))))
        };
        loop {
            if exited(&mut self.children) {
                return false;
            }
            let listening = match self.netns {
                // Its loopback is not this one: pebble's log says when it listens.
                Some(_) => fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .contains("ACME directory available at"),
                None => TcpStream::connect(("127.0.0.1", self.listen)).is_ok(),
            };
            if listening {
                // A pebble that cannot bind exits at once, while the port answers for another.
                std::thread::sleep(Duration::from_millis(300));
                return !exited(&mut self.children);
            }
            assert!(
                Instant::now() < deadline,
                "pebble does not listen on 127.0.0.1:{} after 15 s",
                self.listen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Makes pebble's validator connect to `port` for TLS-ALPN-01 (restarts pebble, which
    /// then forgets every account and order).
    pub fn set_tls_port(&mut self, port: u16) {
        let path = self.dir.path().join("pebble.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("pebble config")).expect("json");
        config["pebble"]["tlsPort"] = port.into();
        fs::write(&path, config.to_string()).expect("write pebble config");
        self.tls_port = port;
        self.restart();
    }

    /// Restarts pebble on the same ports: it forgets every account and order.
    pub fn restart(&mut self) {
        if let Some(old) = self.children.pop() {
            drop(old);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.listen)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "old pebble still listening after 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            self.spawn_pebble(),
            "the restarted pebble exited: another process took its port"
        );
    }

    /// Makes pebble's validator resolve `host` to `ip` alone (instead of 127.0.0.1).
    pub fn point(&self, host: &str, ip: &str) {
        // add-a adds to what is there: clear first.
        self.dns_management("/clear-a", &serde_json::json!({ "host": host }));
        self.dns_management(
            "/add-a",
            &serde_json::json!({ "host": host, "addresses": [ip] }),
        );
    }

    /// Sets a TXT record on pebble's DNS (challtestsrv), as an operator sets one in the zone.
    pub fn set_txt(&self, host: &str, value: &str) {
        self.dns_management(
            "/set-txt",
            &serde_json::json!({ "host": host, "value": value }),
        );
    }

    /// Makes pebble answer `start`..`end` as the renewal window (ARI) of the certificate
    /// `leaf_pem`, through its management interface (pebble 2.8 and later).
    pub fn set_renewal_window(&self, leaf_pem: &str, start: SystemTime, end: SystemTime) {
        let rfc3339 = |at: SystemTime| {
            time::OffsetDateTime::from(at)
                .format(&time::format_description::well_known::Rfc3339)
                .expect("RFC 3339 time")
        };
        let window = serde_json::json!({
            "suggestedWindow": { "start": rfc3339(start), "end": rfc3339(end) }
        });
        let body = serde_json::json!({
            "certificate": leaf_pem,
            "ariResponse": window.to_string(),
        });
        let answer = https_post(
            self.management,
            "/set-renewal-info/",
            &body.to_string(),
            &self.tls_root,
        );
        assert!(
            !answer.contains("rror"),
            "pebble refused the window: {answer}"
        );
    }

    /// Removes every TXT record of `host` from pebble's DNS.
    pub fn clear_txt(&self, host: &str) {
        self.dns_management("/clear-txt", &serde_json::json!({ "host": host }));
    }

    fn dns_management(&self, path: &str, body: &serde_json::Value) {
        let body = body.to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", self.dns_management))
            .expect("challtestsrv management");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "challtestsrv refused {path}: {answer}"
        );
    }

    /// The DNS server pebble's validator asks (challtestsrv, which answers 127.0.0.1 for every
    /// name, unless another was given), for certkeeper's `daemon.resolvers`.
    pub fn dns_address(&self) -> String {
        self.dns_server
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.dns))
    }

    /// Freezes pebble (SIGSTOP) so that an order in flight stays in flight; `resume` thaws it.
    pub fn pause(&self) {
        let pebble = self.children.last().expect("pebble runs");
        signal(&pebble.0, nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        let pebble = self.children.last().expect("pebble runs");
        signal(&pebble.0, nix::sys::signal::Signal::SIGCONT);
    }

    /// How many orders pebble has created (a request rejected for a bad nonce creates none).
    pub fn orders(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("Added order"))
            .count()
    }

    /// What pebble's management API says of the certificate with `serial` ("aa:bb:…" as
    /// certkeeper shows it): its JSON, with "Status" "Valid" or "Revoked".
    pub fn cert_status(&self, serial: &str) -> String {
        let hex = serial.replace(':', "");
        let hex = hex.trim_start_matches('0');
        https_get(
            self.management,
            &format!("/cert-status-by-serial/{hex}"),
            &self.tls_root,
        )
    }

    /// How many certificates pebble has issued.
    /// How many authorizations pebble created. Even with `PEBBLE_AUTHZREUSE=0` pebble reuses a
    /// still-valid authorization for about 1 name in 100 (its test is `rand.Intn(100) > 0`):
    /// a test that needs a second order to be validated afresh checks this.
    pub fn authorizations_created(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("authorizations in the db"))
            .count()
    }

    pub fn issued(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("Issued certificate serial"))
            .count()
    }

    /// The root that signed issued certificates, from pebble's management interface.
    pub fn issuing_root_pem(&self) -> String {
        self.root_pem(0)
    }

    /// Root `index` (0: the default chain's, then one per alternate chain).
    pub fn root_pem(&self, index: u32) -> String {
        https_get(self.management, &format!("/roots/{index}"), &self.tls_root)
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

use rustls_pki_types::pem::PemObject;

/// A certkeeper configuration in its own temporary directory, run through the real binary.
pub struct Certkeeper {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Certkeeper {
    /// A config for one certificate `media` with `domains`, talking to `pebble`, writing copies to
    /// `out/`. `extra` is appended to the `[[certificate]]` table.
    pub fn new(pebble: &Pebble, domains: &[&str], extra: &str) -> Certkeeper {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("certkeeper.toml");
        let ck = Certkeeper { dir, config };
        ck.rewrite(pebble, domains, extra);
        ck
    }

    /// Rewrites the config with other domains or `extra` keys (then SIGHUP a daemon).
    pub fn rewrite(&self, pebble: &Pebble, domains: &[&str], extra: &str) {
        let domains: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
        let text = format!(
            "[acme]\ndirectory = \"{url}\"\nstaging_directory = \"{url}\"\nextra_root = \"{root}\"\n\
             contact = [\"ops@example.com\"]\n\n[daemon]\nstate_dir = \"state\"\nlisten = \"127.0.0.1:{port}\"\n\
             http01_port = {port}\nresolvers = [\"{dns}\"]\n\
             tls_alpn_listen = \"127.0.0.1:{tls}\"\ntls_alpn_port = {tls}\n\n\
             [[certificate]]\nname = \"media\"\ndomains = [{domains}]\n{extra}\n\n[certificate.output]\ndir = \"out\"\n",
            url = pebble.directory_url,
            root = pebble.tls_root.display(),
            port = pebble.http_port,
            dns = pebble.dns_address(),
            tls = pebble.tls_port,
            domains = domains.join(", "),
        );
        fs::write(&self.config, text).expect("write certkeeper config");
    }

    /// Points the pre-flight's TLS-ALPN-01 probe at `port` (where nothing listens, say: the
    /// ladder then passes over TLS-ALPN-01).
    pub fn set_tls_alpn_port(&self, port: u16) {
        let text = fs::read_to_string(&self.config).expect("read certkeeper config");
        let lines: Vec<String> = text
            .lines()
            .map(|line| match line.split(" = ").next() {
                Some("tls_alpn_port") => format!("tls_alpn_port = {port}"),
                _ => line.to_string(),
            })
            .collect();
        fs::write(&self.config, lines.join("\n") + "\n").expect("write certkeeper config");
    }

    /// Sets where certkeeper listens, the port the CA connects to, and the pre-flight's DNS
    /// server (the `[daemon]` keys the harness writes).
    pub fn set_daemon_ports(&self, listen: u16, http01_port: u16, resolver: &str) {
        let text = fs::read_to_string(&self.config).expect("read certkeeper config");
        let lines: Vec<String> = text
            .lines()
            .map(|line| match line.split(" = ").next() {
                Some("listen") => format!("listen = \"127.0.0.1:{listen}\""),
                Some("http01_port") => format!("http01_port = {http01_port}"),
                Some("resolvers") => format!("resolvers = [\"{resolver}\"]"),
                _ => line.to_string(),
            })
            .collect();
        fs::write(&self.config, lines.join("\n") + "\n").expect("write certkeeper config");
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Runs a one-off command and returns its output (whatever its exit status).
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .expect("run certkeeper")
    }

    /// Runs a one-off command inside the network namespace `netns`.
    pub fn run_in(&self, netns: &str, args: &[&str]) -> Output {
        program("ip")
            .args(["netns", "exec", netns, BIN])
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .expect("run certkeeper in a network namespace")
    }

    /// Runs a one-off command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "certkeeper {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// Starts `certkeeper run`, logging to `daemon.log` in the test directory.
    pub fn spawn_daemon(&self) -> Killed {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .expect("daemon log");
        Killed(
            Command::new(BIN)
                .arg("--config")
                .arg(&self.config)
                .arg("run")
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start certkeeper run"),
        )
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// Waits (bounded) until `predicate` holds, polling every 50 ms.
    pub fn wait_until(&self, what: &str, limit: Duration, predicate: impl FnMut() -> bool) {
        wait_for(what, limit, predicate, || {
            format!("daemon log:\n{}", self.daemon_log())
        });
    }

    pub fn current_dir(&self) -> PathBuf {
        fs::canonicalize(self.path("state/certs/media/current")).expect("current link")
    }

    /// The leaf certificate in place (PEM).
    pub fn current_leaf_pem(&self) -> String {
        let chain = fs::read_to_string(self.current_dir().join("fullchain.pem")).expect("chain");
        let end = "-----END CERTIFICATE-----";
        let leaf = chain.split_inclusive(end).next().expect("a leaf");
        format!("{}\n", leaf.trim())
    }

    /// Makes the next run ask the CA for the renewal window again, as it does once the CA's
    /// `Retry-After` (pebble: 6 hours) has passed.
    pub fn forget_ari_retry_after(&self) {
        let path = self.path("state/certs/media/state.json");
        let mut state: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("state")).expect("json");
        state["ari"]["next_poll"] = 0.into();
        fs::write(&path, state.to_string()).expect("write state");
    }

    /// Whether at least `count` versions exist and `current` already points at the newest
    /// (a version directory is renamed into place a moment before `current` switches).
    pub fn settled(&self, count: usize) -> bool {
        let versions = self.versions();
        versions.len() >= count
            && fs::canonicalize(self.path("state/certs/media/current"))
                .ok()
                .zip(versions.last())
                .is_some_and(|(dir, newest)| dir.ends_with(newest))
    }

    pub fn versions(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path("state/certs/media/versions"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// A real nginx serving TLS on a free loopback port with the given certificate files; its
/// master's PID is in `pidfile`. Killed on drop.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub pidfile: PathBuf,
    process: Killed,
}

/// nginx's workers outlive a killed master and keep serving its ports: stop it as a service
/// manager would (SIGTERM: the master stops its workers, then itself), bounded.
impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.process.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !matches!(self.process.0.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Nginx {
    /// TLS on a free port with these certificate files.
    pub fn start(fullchain: &Path, key: &Path) -> Nginx {
        Self::start_at(free_port(), fullchain, key)
    }

    /// TLS on `port` with these certificate files.
    pub fn start_at(port: u16, fullchain: &Path, key: &Path) -> Nginx {
        Self::start_with(
            port,
            &format!(
                "listen 127.0.0.1:{port} ssl;\n  server_name media.example.com;\n  ssl_certificate {};\n  \
                 ssl_certificate_key {};\n  return 200 \"ok\\n\";",
                fullchain.display(),
                key.display()
            ),
        )
    }

    /// Plain HTTP on `port`, serving files from `root` (another server holding "port 80").
    pub fn start_http(port: u16, root: &Path) -> Nginx {
        Self::start_with(
            port,
            &format!("listen 127.0.0.1:{port};\n  root {};", root.display()),
        )
    }

    /// A TLS port that routes by ALPN (`ssl_preread`): `acme-tls/1` handshakes to certkeeper's
    /// responder on `acme_port`, every other one to an HTTPS server (the "media server",
    /// answering "media") with `fullchain`/`key`. The case of a server that holds 443 for good.
    pub fn start_alpn_router(acme_port: u16, fullchain: &Path, key: &Path) -> Nginx {
        let (port, media) = (free_port(), free_port());
        let stream = format!(
            "stream {{\n map $ssl_preread_alpn_protocols $backend {{\n  ~\\bacme-tls/1\\b 127.0.0.1:{acme_port};\n  \
             default 127.0.0.1:{media};\n }}\n server {{\n  listen 127.0.0.1:{port};\n  ssl_preread on;\n  \
             proxy_pass $backend;\n }}\n}}\n"
        );
        let server = format!(
            "listen 127.0.0.1:{media} ssl;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  \
             return 200 \"media\\n\";",
            fullchain.display(),
            key.display()
        );
        let module = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n";
        Self::start_conf(port, module, &server, &stream)
    }

    /// nginx with the rtmp module (Debian `libnginx-mod-rtmp`): RTMP ingest on `rtmp_port`
    /// writing HLS into `hls`, and that HLS served over HTTPS with `fullchain`/`key`.
    pub fn start_rtmp(fullchain: &Path, key: &Path, hls: &Path, rtmp_port: u16) -> Nginx {
        let port = free_port();
        let module = "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n";
        let rtmp = format!(
            "rtmp {{\n server {{\n  listen 127.0.0.1:{rtmp_port};\n  application live {{\n   live on;\n   \
             hls on;\n   hls_path {};\n  }}\n }}\n}}\n",
            hls.display()
        );
        let server = format!(
            "listen 127.0.0.1:{port} ssl;\n  server_name media.example.com;\n  ssl_certificate {};\n  \
             ssl_certificate_key {};\n  location /hls/ {{ alias {}/; }}",
            fullchain.display(),
            key.display(),
            hls.display()
        );
        Self::start_conf(port, module, &server, &rtmp)
    }

    fn start_with(port: u16, server: &str) -> Nginx {
        Self::start_conf(port, "", server, "")
    }

    /// Plain HTTP on `port` for a load test (benchmarks): one worker per core, room for
    /// thousands of connections, and no keep-alive (each answer closes its connection, as
    /// certkeeper's listener does). Everything gets 404.
    pub fn start_for_load(port: u16) -> Nginx {
        Self::start_sized(
            port,
            "auto",
            16_384,
            "",
            &format!(
                "listen 127.0.0.1:{port} backlog=1024;\n  keepalive_timeout 0;\n  return 404;"
            ),
            "",
        )
    }

    fn start_conf(port: u16, head: &str, server: &str, tail: &str) -> Nginx {
        Self::start_sized(port, "1", 64, head, server, tail)
    }

    fn start_sized(
        port: u16,
        workers: &str,
        connections: u32,
        head: &str,
        server: &str,
        tail: &str,
    ) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("nginx.pid");
        let d = dir.path().display();
        let conf = format!(
            "{head}daemon off;\nworker_processes {workers};\nworker_rlimit_nofile {files};\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections {connections}; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{\n  {server}\n }}\n}}\n{tail}",
            files = connections * 2 + 64,
        );
        let conf_path = dir.path().join("nginx.conf");
        fs::write(&conf_path, conf).expect("nginx.conf");
        let child = program("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let process = Killed(child);
        wait_for_port(port);
        Nginx {
            dir,
            port,
            pidfile,
            process,
        }
    }

    pub fn endpoint(&self) -> certkeeper::config::Endpoint {
        certkeeper::config::Endpoint {
            address: format!("127.0.0.1:{}", self.port),
            sni: certkeeper::names::DomainName::parse("media.example.com").expect("name"),
        }
    }
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

/// A real authoritative BIND 9 on a free loopback port, serving `example.com` with the given
/// extra zone lines, and accepting TSIG-signed (hmac-sha256) dynamic updates with the key in
/// `key_file` (BIND's own key file format). Killed on drop.
pub struct Bind {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub key_file: PathBuf,
    pub key_name: &'static str,
    _process: Killed,
}

impl Bind {
    pub fn start(records: &str) -> Bind {
        Self::start_in(None, records)
    }

    /// Starts named inside network namespace `netns` when given (`ip netns exec`).
    pub fn start_in(netns: Option<&str>, records: &str) -> Bind {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        let secret = base64_secret();
        let key_name = "certkeeper-test.";
        let key = format!(
            "key \"{key_name}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"
        );
        let key_file = dir.path().join("tsig.key");
        fs::write(&key_file, &key).expect("key file");
        let conf = format!(
            "options {{\n directory \"{d}\";\n listen-on port {port} {{ 127.0.0.1; }};\n listen-on-v6 {{ none; }};\n\
             pid-file \"{d}/named.pid\";\n recursion no;\n dnssec-validation no;\n notify no;\n}};\n\
             controls {{ }};\n{key}\
             zone \"example.com\" {{ type primary; file \"{d}/example.com.zone\"; allow-update {{ key \"{key_name}\"; }}; }};\n"
        );
        fs::write(dir.path().join("named.conf"), conf).expect("named.conf");
        let zone = format!(
            "$ORIGIN example.com.\n$TTL 5\n@ IN SOA ns1.example.com. admin.example.com. 1 60 60 600 5\n\
             @ IN NS ns1.example.com.\nns1 IN A 127.0.0.1\n{records}\n"
        );
        fs::write(dir.path().join("example.com.zone"), zone).expect("zone");
        let mut command = match netns {
            Some(ns) => {
                let mut c = program("ip");
                c.args(["netns", "exec", ns]).arg(require("named"));
                c
            }
            None => program("named"),
        };
        let child = command
            .args(["-g", "-u", "root", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("named.log")).expect("named log"))
            .spawn()
            .expect("start named");
        let process = Killed(child);
        let bind = Bind {
            dir,
            port,
            key_file,
            key_name,
            _process: process,
        };
        if netns.is_none() {
            bind.wait_until_serving();
        }
        bind
    }

    /// Waits until named answers on its port (bounded).
    pub fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default();
            if log.contains("running") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "named did not start within 15 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A `[dns01]` section driving this server over RFC 2136.
    pub fn rfc2136_section(&self) -> String {
        format!(
            "[dns01]\nprovider = \"rfc2136\"\nserver = \"{addr}\"\nzone = \"example.com\"\nkey_file = \"{key}\"\n\
             check_servers = [\"{addr}\"]\npropagation_timeout_secs = 20\n",
            addr = self.address(),
            key = self.key_file.display()
        )
    }
}

fn base64_secret() -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
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

/// acme2certifier (an ACME server from PyPI that implements renewalInfo, RFC 9773) on a free
/// loopback port behind TLS, with a local OpenSSL CA. Its challenge validation is switched
/// off: these tests are about scheduling, and pebble covers validation. Killed on drop.
pub struct Acme2certifier {
    pub dir: tempfile::TempDir,
    pub directory_url: String,
    pub tls_root: PathBuf,
    _process: Killed,
}

const A2C_LAUNCHER: &str = r#"
import importlib.util, os, ssl, sys
os.environ["ACME_SRV_CONFIGFILE"] = sys.argv[1]
os.environ["ACME2CERTIFIER_I_KNOW_THE_RISK"] = "1"
import acme2certifier
path = os.path.join(os.path.dirname(acme2certifier.__file__), "share", "acme2certifier_wsgi.py")
spec = importlib.util.spec_from_file_location("a2c_wsgi", path)
wsgi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wsgi)
from wsgiref.simple_server import make_server
def app(environ, start):
    environ["wsgi.url_scheme"] = "https"
    environ["HTTPS"] = "on"
    return wsgi.application(environ, start)
server = make_server("127.0.0.1", int(sys.argv[2]), app, handler_class=wsgi.get_handler_cls())
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[3], sys.argv[4])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl Acme2certifier {
    /// `extra_config` is appended to its acme_srv.cfg (e.g. a `[Renewalinfo]` section).
    pub fn start(validity_days: u32, extra_config: &str) -> Acme2certifier {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/a2c-venv/bin/python");
        assert!(
            python.exists(),
            "acme2certifier is not installed: run scripts/deps --tests (it creates target/a2c-venv)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |name: &str| dir.path().join(name);
        let tls_root = p("tls-root.pem");
        write_tls_identity(&tls_root, &p("tls-cert.pem"), &p("tls-key.pem"));
        // The issuing CA.
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "acme2certifier test CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        ca.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        fs::write(p("ca.crt"), ca.self_signed(&ca_key).expect("ca").pem()).expect("ca.crt");
        fs::write(p("ca.key"), ca_key.serialize_pem()).expect("ca.key");
        fs::create_dir(p("certs")).expect("certs dir");
        let d = dir.path().display();
        fs::write(
            p("acme_srv.cfg"),
            format!(
                "[DEFAULT]\ndebug: True\n\n[Nonce]\nnonce_check_disable: False\n\n[CAhandler]\n\
                 handler_module: acme2certifier.cahandlers.openssl_ca_handler\nissuing_ca_key: {d}/ca.key\n\
                 issuing_ca_cert: {d}/ca.crt\nissuing_ca_crl: {d}/ca.crl\ncert_validity_days: {validity_days}\n\
                 cert_save_path: {d}/certs\nca_cert_chain_list: []\n\n[DBhandler]\nhandler: wsgi\n\
                 dbfile: {d}/acme_srv.db\n\n[Challenge]\nchallenge_validation_disable: True\n\n{extra_config}\n"
            ),
        )
        .expect("acme_srv.cfg");
        fs::write(p("launcher.py"), A2C_LAUNCHER).expect("launcher");
        let port = free_port();
        let child = Command::new(python)
            .arg(p("launcher.py"))
            .arg(p("acme_srv.cfg"))
            .arg(port.to_string())
            .arg(p("tls-cert.pem"))
            .arg(p("tls-key.pem"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(fs::File::create(p("a2c.log")).expect("log"))
            .spawn()
            .expect("start acme2certifier");
        let process = Killed(child);
        wait_for_port(port);
        Acme2certifier {
            directory_url: format!("https://127.0.0.1:{port}/directory"),
            tls_root,
            dir,
            _process: process,
        }
    }

    /// How many orders it has received that named a certificate they replace.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("a2c.log")).unwrap_or_default()
    }
}
