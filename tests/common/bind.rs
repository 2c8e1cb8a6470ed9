//! A real authoritative BIND 9 taking TSIG-signed dynamic updates.

use super::*;

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
        let log = || read_log(&self.dir.path().join("named.log"));
        wait_for(
            "named to start",
            Duration::from_secs(15),
            || log().contains("running"),
            log,
        );
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
