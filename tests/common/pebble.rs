//! Debian's pebble and pebble-challtestsrv on free loopback ports (Debian 12's 2.4, or sid's
//! 2.10 from `scripts/deps --tests`), with their management interfaces.

use super::*;

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
        let exited = |children: &mut Vec<Killed>| {
            children
                .last_mut()
                .is_some_and(|c| matches!(c.0.try_wait(), Ok(Some(_))))
        };
        // Listening means pebble's own process holds both its ports (a port answering may be
        // another process's, and a pebble that cannot bind one exits): `ip netns exec` execs
        // pebble, so the child's pid is pebble's, and /proc shows its namespace's sockets.
        let pid = self.children.last().map_or(0, |c| c.0.id());
        let ports = [self.listen, self.management];
        let mut listening = false;
        wait_for(
            &format!("pebble to listen on 127.0.0.1:{}", self.listen),
            Duration::from_secs(15),
            || {
                listening = ports.iter().all(|port| process_listens(pid, *port));
                listening || exited(&mut self.children)
            },
            || read_log(&self.log),
        );
        listening
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
        let listen = self.listen;
        wait_for(
            "the old pebble to stop listening",
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", listen)).is_err(),
            String::new,
        );
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
        self.log_lines_with("Added order")
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

    /// How many authorizations pebble created. Even with `PEBBLE_AUTHZREUSE=0` pebble reuses a
    /// still-valid authorization for about 1 name in 100 (its test is `rand.Intn(100) > 0`):
    /// a test that needs a second order to be validated afresh checks this.
    pub fn authorizations_created(&self) -> usize {
        self.log_lines_with("authorizations in the db")
    }

    /// How many certificates pebble has issued.
    pub fn issued(&self) -> usize {
        self.log_lines_with("Issued certificate serial")
    }

    /// How many lines of pebble's log contain `needle`.
    fn log_lines_with(&self, needle: &str) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(needle))
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
