//! A real etcd cluster (Debian's `etcd-server`) of several members on loopback, for cluster
//! mode. Members can be stopped and started again on their data; every child is killed on drop.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{Killed, free_port};

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    pub clients: Vec<u16>,
    peers: Vec<u16>,
    members: Vec<Option<Killed>>,
    /// Clients must present a certificate over TLS, and log in as a user.
    pub secure: Option<Secure>,
}

/// The files of a TLS etcd with client-certificate and password authentication.
pub struct Secure {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader.
    pub fn start(size: usize) -> EtcdCluster {
        assert!(
            PathBuf::from("/usr/bin/etcd").exists(),
            "etcd is not installed: run scripts/test (it installs Debian's etcd-server)"
        );
        let mut cluster = EtcdCluster {
            dir: tempfile::tempdir().expect("tempdir"),
            clients: (0..size).map(|_| free_port()).collect(),
            peers: (0..size).map(|_| free_port()).collect(),
            members: (0..size).map(|_| None).collect(),
            secure: None,
        };
        cluster.start_all();
        cluster
    }

    /// One member over TLS that requires a client certificate, with authentication enabled
    /// and `user` (password `password`) allowed to read and write under `/certkeeper/`.
    pub fn start_secure(user: &str, password: &str) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let secure = write_identities(dir.path());
        let mut cluster = EtcdCluster {
            dir,
            clients: vec![free_port()],
            peers: vec![free_port()],
            members: vec![None],
            secure: Some(secure),
        };
        cluster.start_all();
        let root_password = "root-password";
        cluster.etcdctl(&[
            "user",
            "add",
            &format!("root:{root_password}"),
            "--interactive=false",
        ]);
        cluster.etcdctl(&[
            "user",
            "add",
            &format!("{user}:{password}"),
            "--interactive=false",
        ]);
        cluster.etcdctl(&["role", "add", "certkeeper"]);
        cluster.etcdctl(&[
            "role",
            "grant-permission",
            "certkeeper",
            "--prefix=true",
            "readwrite",
            "/certkeeper/",
        ]);
        // The leader key is the prefix itself plus "/leader".
        cluster.etcdctl(&[
            "role",
            "grant-permission",
            "certkeeper",
            "readwrite",
            "/certkeeper/leader",
        ]);
        cluster.etcdctl(&["user", "grant-role", user, "certkeeper"]);
        cluster.etcdctl(&["auth", "enable"]);
        cluster
    }

    fn etcdctl(&self, args: &[&str]) {
        let secure = self.secure.as_ref().expect("a secure cluster");
        let output = super::program("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://127.0.0.1:{}", self.clients[0]))
            .arg(format!("--cacert={}", secure.ca.display()))
            .arg(format!("--cert={}", secure.client_cert.display()))
            .arg(format!("--key={}", secure.client_key.display()))
            .args(["--command-timeout=10s"])
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(
            output.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `endpoints = [...]` for a `[cluster]` section.
    pub fn endpoints(&self) -> String {
        let urls: Vec<String> = self
            .clients
            .iter()
            .map(|port| format!("\"http://127.0.0.1:{port}\""))
            .collect();
        format!("endpoints = [{}]", urls.join(", "))
    }

    pub fn start_all(&mut self) {
        let initial: Vec<String> = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, port)| format!("m{i}=http://127.0.0.1:{port}"))
            .collect();
        let scheme = if self.secure.is_some() {
            "https"
        } else {
            "http"
        };
        for i in 0..self.members.len() {
            let (client, peer) = (self.clients[i], self.peers[i]);
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(format!("m{i}.log")))
                .expect("etcd log");
            let mut command = super::program("etcd");
            if let Some(secure) = &self.secure {
                command
                    .arg("--cert-file")
                    .arg(&secure.server_cert)
                    .arg("--key-file")
                    .arg(&secure.server_key)
                    .arg("--trusted-ca-file")
                    .arg(&secure.ca)
                    .arg("--client-cert-auth");
            }
            let child = command
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(self.dir.path().join(format!("m{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("{scheme}://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("{scheme}://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", "certkeeper-test"])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd");
            self.members[i] = Some(Killed(child));
        }
        self.wait_healthy();
    }

    /// Kills every member (their data stays for [`EtcdCluster::start_all`]).
    pub fn stop_all(&mut self) {
        for member in &mut self.members {
            drop(member.take());
        }
    }

    fn wait_healthy(&self) {
        if self.secure.is_some() {
            // No plain HTTP to ask: wait for the port, then for etcdctl to get an answer.
            for &port in &self.clients {
                super::wait_for_port(port);
            }
            self.etcdctl(&["endpoint", "health"]);
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for &port in &self.clients {
            loop {
                let health = get(port, "/health").unwrap_or_default();
                if health.contains("\"health\":\"true\"") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd on port {port} not healthy after 30 s: {health}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// How many keys start with `prefix` (None: no member answers).
    pub fn count(&self, prefix: &str) -> Option<u64> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({
            "key": b64.encode(prefix),
            "range_end": b64.encode(end),
            "count_only": true,
        })
        .to_string();
        let answer = self
            .clients
            .iter()
            .find_map(|&port| post(port, "/v3/kv/range", &body))?;
        let value: serde_json::Value = serde_json::from_str(&answer).ok()?;
        // The gateway leaves zero counts out, and writes int64s as strings.
        Some(
            value["count"]
                .as_str()
                .map_or(0, |c| c.parse().unwrap_or(0)),
        )
    }

    /// Writes `value` at `key` as anyone with write access to etcd could; whether a member
    /// took it.
    pub fn put(&self, key: &str, value: &str) -> bool {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body =
            serde_json::json!({ "key": b64.encode(key), "value": b64.encode(value) }).to_string();
        self.clients.iter().any(|&port| {
            post(port, "/v3/kv/put", &body).is_some_and(|answer| answer.contains("\"header\""))
        })
    }

    /// The value at `key`, through the JSON gateway of the first member that answers.
    pub fn get(&self, key: &str) -> Option<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({ "key": b64.encode(key) }).to_string();
        for &port in &self.clients {
            let Some(answer) = post(port, "/v3/kv/range", &body) else {
                continue;
            };
            let value: serde_json::Value = serde_json::from_str(&answer).ok()?;
            let found = value["kvs"][0]["value"].as_str()?;
            return String::from_utf8(b64.decode(found).ok()?).ok();
        }
        None
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    exchange(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

fn post(port: u16, path: &str, body: &str) -> Option<String> {
    exchange(
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn exchange(port: u16, request: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in `dir`.
fn write_identities(dir: &std::path::Path) -> Secure {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "certkeeper test etcd CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, common_name: Option<&str>| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(common_name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
        }
        let cert = params.signed_by(&key, &issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key_pem) =
        leaf(vec!["127.0.0.1".into(), "localhost".into()], Some("etcd"));
    // etcd's JSON gateway refuses client certificates that carry a CommonName once auth is
    // enabled (the name would not be used as the user): identify by password instead.
    let (client_pem, client_key_pem) = leaf(vec![], None);
    let secure = Secure {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    fs::write(&secure.ca, ca_cert.pem()).expect("ca");
    fs::write(&secure.client_cert, client_pem).expect("client cert");
    fs::write(&secure.client_key, client_key_pem).expect("client key");
    fs::write(&secure.server_cert, server_pem).expect("server cert");
    fs::write(&secure.server_key, server_key_pem).expect("server key");
    secure
}
