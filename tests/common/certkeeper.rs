//! The real `certkeeper` binary with a configuration in its own temporary directory.

use super::*;

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
        self.spawn_daemon_of(BIN)
    }

    /// [`Certkeeper::spawn_daemon`] with another certkeeper binary (a benchmark's earlier build).
    pub fn spawn_daemon_of(&self, bin: &str) -> Killed {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .expect("daemon log");
        Killed(
            Command::new(bin)
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
