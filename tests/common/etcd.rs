//! A real etcd cluster (Debian's `etcd-server`) of several members on loopback, for cluster
//! mode. Members can be stopped and started again on their data; every child is killed on drop.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Killed, free_port};

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    pub clients: Vec<u16>,
    peers: Vec<u16>,
    members: Vec<Option<Killed>>,
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
        };
        cluster.start_all();
        cluster
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
        for i in 0..self.members.len() {
            let (client, peer) = (self.clients[i], self.peers[i]);
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(format!("m{i}.log")))
                .expect("etcd log");
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(self.dir.path().join(format!("m{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
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
