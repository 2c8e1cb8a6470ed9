//! What the other nodes' view costs the pre-flight in cluster mode: `check` through a node's
//! daemon (real pebble, real etcd, whole process as an operator runs it), with another node
//! up and asked for its view, then with that node stopped (it withdraws its announcement).
//!
//! `cargo bench --bench cluster` (N from BENCH_N, default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::time::{Duration, Instant};

const NAME: &str = "media.example.com";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Node `k`: its listener on 127.0.0.{k+2}, a member of the cluster at `etcd`.
fn node(
    pebble: &common::Pebble,
    etcd: &common::etcd::EtcdCluster,
    secret: &std::path::Path,
    k: usize,
) -> common::Certkeeper {
    let ck = common::Certkeeper::new(pebble, &[NAME], "");
    let text = fs::read_to_string(&ck.config).expect("config").replace(
        &format!("listen = \"127.0.0.1:{}\"", pebble.http_port),
        &format!("listen = \"127.0.0.{}:{}\"", k + 2, pebble.http_port),
    );
    let text = format!(
        "{text}\n[cluster]\n{}\nnode = \"n{k}\"\nsecret_file = \"{}\"\n",
        etcd.endpoints(),
        secret.display()
    );
    fs::write(&ck.config, text).expect("config");
    ck
}

fn timed_checks(ck: &common::Certkeeper, n: usize, marker: Option<&str>) -> Duration {
    let samples = (0..n)
        .map(|_| {
            let started = Instant::now();
            let said = ck.ok(&["check", "media"]);
            let elapsed = started.elapsed();
            if let Some(marker) = marker {
                assert!(said.contains(marker), "{said}");
            }
            elapsed
        })
        .collect();
    common::median(samples)
}

fn main() {
    let n = common::bench_n(200);
    let pebble = common::Pebble::start(None);
    let etcd = common::etcd::EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("cluster.secret");
    fs::write(&secret, "0123456789abcdef0123456789abcdef-bench").expect("secret");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("secret mode");
    pebble.point(NAME, "127.0.0.2");
    let (n0, n1) = (
        node(&pebble, &etcd, &secret, 0),
        node(&pebble, &etcd, &secret, 1),
    );
    let _first = n0.spawn_daemon();
    n0.wait_until("node 0's certificate", Duration::from_secs(30), || {
        n0.path("out/fullchain.pem").exists()
    });
    let second = n1.spawn_daemon();
    n1.wait_until("node 1's announcement", Duration::from_secs(15), || {
        etcd.get("/certkeeper/nodes/n1").is_some()
    });
    let with_peer = timed_checks(&n0, n, Some("from node n1:"));

    common::signal(&second.0, nix::sys::signal::Signal::SIGTERM);
    n1.wait_until("node 1 to withdraw", Duration::from_secs(15), || {
        etcd.get("/certkeeper/nodes/n1").is_none()
    });
    drop(second);
    let alone = timed_checks(&n0, n, None);

    println!("`check media` through node 0's daemon (1 name, IPv4), median of {n} each:");
    println!(
        "  alone {:.1} ms; with node n1 asked for its view {:.1} ms: the other node's look adds {:.1} ms",
        ms(alone),
        ms(with_peer),
        ms(with_peer) - ms(alone)
    );
}
