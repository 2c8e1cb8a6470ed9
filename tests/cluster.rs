//! Cluster mode: three certkeeper nodes sharing certificates through a real three-member etcd
//! cluster on loopback, with one real pebble. Each node listens on its own loopback address
//! (127.0.0.2 to 127.0.0.4) on pebble's validation port; pebble's DNS (challtestsrv) decides
//! which node the CA's HTTP-01 request reaches.

use crate::common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;

use common::etcd::EtcdCluster;
use common::{Certkeeper, Killed, Pebble};

const NAME: &str = "media.example.com";

struct Node {
    ck: Certkeeper,
    name: String,
    daemon: Option<Killed>,
}

impl Node {
    /// Node `k` listens on 127.0.0.{k+2}.
    fn new(pebble: &Pebble, etcd: &EtcdCluster, secret: &std::path::Path, k: usize) -> Node {
        let ck = Certkeeper::new(pebble, &[NAME], "");
        // Each node reloads its own server: here, a line per reload.
        let reload = format!(
            "reload = \"echo $CERTKEEPER_NAME >> {}\"",
            ck.path("reloads.log").display()
        );
        ck.rewrite(pebble, &[NAME], &reload);
        let name = format!("n{k}");
        // These tests time kills and outages against the CA's validation requests: no
        // pre-flight probe before the order to mistake for one.
        let text = fs::read_to_string(&ck.config).unwrap().replace(
            &format!("listen = \"127.0.0.1:{}\"", pebble.http_port),
            &format!(
                "listen = \"{}:{}\"\npreflight_before_order = false",
                ip(k),
                pebble.http_port
            ),
        );
        let text = format!(
            "{text}\n[cluster]\n{}\nnode = \"{name}\"\nsecret_file = \"{}\"\nlease_secs = 3\nsync_interval_secs = 1\n",
            etcd.endpoints(),
            secret.display()
        );
        fs::write(&ck.config, text).unwrap();
        Node {
            ck,
            name,
            daemon: None,
        }
    }

    fn start(&mut self) {
        self.daemon = Some(self.ck.spawn_daemon());
    }

    /// SIGTERM, and waits (bounded) until the daemon has gone.
    fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            common::signal(&daemon.0, nix::sys::signal::Signal::SIGTERM);
            common::wait_for(
                &format!("{} to stop", self.name),
                Duration::from_secs(10),
                || daemon.0.try_wait().ok().flatten().is_some(),
                String::new,
            );
        }
    }

    /// SIGKILL, no goodbye.
    fn kill(&mut self) {
        drop(self.daemon.take());
    }

    fn running(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|d| d.0.try_wait().ok().flatten().is_none())
    }

    /// The serial of the certificate in the node's output directory.
    fn serial(&self) -> Option<String> {
        let pem = fs::read(self.ck.path("out/fullchain.pem")).ok()?;
        certkeeper::deploy::bundle::read_leaf(&pem)
            .ok()
            .map(|leaf| leaf.serial)
    }

    fn files(&self) -> (Vec<u8>, Vec<u8>) {
        (
            fs::read(self.ck.path("out/fullchain.pem")).unwrap(),
            fs::read(self.ck.path("out/privkey.pem")).unwrap(),
        )
    }
}

fn ip(k: usize) -> String {
    format!("127.0.0.{}", k + 2)
}

fn secret_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("cluster.secret");
    let random: String = (0..48).map(|_| fastrand::alphanumeric()).collect();
    fs::write(&path, random).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Waits (bounded) until `predicate` holds; on timeout shows every node's log.
fn wait_until(nodes: &[Node], what: &str, limit: Duration, predicate: impl FnMut() -> bool) {
    common::wait_for(what, limit, predicate, || {
        let logs: Vec<String> = nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, n.ck.daemon_log()))
            .collect();
        logs.join("\n")
    });
}

/// Waits (bounded) until the nodes numbered `on` all hold one same certificate other than
/// `not`, and returns its serial.
fn wait_for_one_certificate(
    nodes: &[Node],
    on: &[usize],
    not: Option<&str>,
    what: &str,
    limit: Duration,
) -> String {
    let mut found = None;
    wait_until(nodes, what, limit, || {
        let serials: Vec<Option<String>> = on.iter().map(|&k| nodes[k].serial()).collect();
        found = serials[0].clone().filter(|first| {
            serials.iter().all(|s| s.as_ref() == Some(first)) && Some(first.as_str()) != not
        });
        found.is_some()
    });
    found.unwrap_or_default()
}

/// Node 0 starts alone and issues the first certificate, validated through itself.
fn first_issuance(pebble: &Pebble, nodes: &mut [Node]) {
    pebble.point(NAME, &ip(0));
    nodes[0].start();
    wait_until(
        nodes,
        "node 0 to issue the first certificate",
        Duration::from_secs(30),
        || nodes[0].serial().is_some(),
    );
}

/// Pebble at `validity`, an etcd cluster, three nodes; node 0 starts alone and issues the
/// first certificate (validated through itself), then nodes 1 and 2 start and catch up.
fn cluster_with_a_certificate(
    validity: u64,
) -> (Pebble, EtcdCluster, tempfile::TempDir, Vec<Node>, String) {
    let pebble = Pebble::start(Some(Duration::from_secs(validity)));
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let mut nodes: Vec<Node> = (0..3)
        .map(|k| Node::new(&pebble, &etcd, &secret, k))
        .collect();
    first_issuance(&pebble, &mut nodes);
    assert_eq!(etcd.get("/certkeeper/leader").as_deref(), Some("n0"));
    nodes[1].start();
    nodes[2].start();
    let first = wait_for_one_certificate(
        &nodes,
        &[0, 1, 2],
        None,
        "nodes 1 and 2 to catch up on start",
        Duration::from_secs(20),
    );
    assert_eq!(pebble.orders(), 1, "one order for the first certificate");
    (pebble, etcd, dir, nodes, first)
}

#[test]
fn each_certificate_is_ordered_once_and_validated_through_any_node() {
    let (pebble, etcd, _dir, nodes, first) = cluster_with_a_certificate(30);

    // Node 1 serves its certificate with a real nginx: its reload signals nginx, and its live
    // check asks nginx for the new chain.
    let nginx = common::Nginx::start(
        &nodes[1].ck.path("out/fullchain.pem"),
        &nodes[1].ck.path("out/privkey.pem"),
    );
    let text = fs::read_to_string(&nodes[1].ck.config).unwrap().replace(
        "reload = \"echo",
        &format!(
            "verify = [{{ endpoint = \"127.0.0.1:{}\", sni = \"{NAME}\" }}]\nreload = \"kill -HUP $(cat {}) && echo",
            nginx.port,
            nginx.pidfile.display()
        ),
    );
    fs::write(&nodes[1].ck.config, text).unwrap();
    common::signal(
        &nodes[1].daemon.as_ref().unwrap().0,
        nix::sys::signal::Signal::SIGHUP,
    );
    wait_until(
        &nodes,
        "node 1 to re-read its config",
        Duration::from_secs(10),
        || nodes[1].ck.daemon_log().contains("configuration re-read"),
    );

    // The renewal: pebble now reaches node 2, which does not hold the lease.
    pebble.point(NAME, &ip(2));
    wait_for_one_certificate(
        &nodes,
        &[0, 1, 2],
        Some(&first),
        "the renewal on all three nodes",
        Duration::from_secs(40),
    );
    assert_eq!(etcd.get("/certkeeper/leader").as_deref(), Some("n0"));
    assert_eq!(
        (pebble.orders(), pebble.issued()),
        (2, 2),
        "each certificate ordered once"
    );
    let log = nodes[0].ck.daemon_log();
    assert!(log.contains("certificate issued and deployed"), "{log}");
    let answered = "answered an http-01 request with another node's answer";
    if pebble.authorizations_created() == 2 {
        assert!(nodes[2].ck.daemon_log().contains(answered));
    } else {
        // Nothing to validate: there is no http-01 request to answer this run.
        eprintln!(
            "NOTE: pebble reused the first order's authorization (it does for ~1 name in 100 \
             even with PEBBLE_AUTHZREUSE=0): the answer through node 2 was not exercised"
        );
    }
    assert!(!nodes[1].ck.daemon_log().contains(answered));
    for node in &nodes[1..] {
        let log = node.ck.daemon_log();
        assert!(
            log.contains("installed the certificate another node published"),
            "{log}"
        );
        assert!(
            !log.contains("renewal started"),
            "only the lease holder orders:\n{log}"
        );
    }

    // Node 1's nginx serves node 1's current chain (its live check passed, or it would have
    // rolled back). The lease holder may renew once more meanwhile: the files are read after
    // the install that wrote them has been checked live.
    let _ = rustls::crypto::ring::default_provider().install_default();
    wait_until(
        &nodes,
        "node 1's nginx to serve node 1's current certificate",
        Duration::from_secs(20),
        || {
            let installs = nodes[1]
                .ck
                .daemon_log()
                .matches("installed the certificate another node published")
                .count();
            let chain: Vec<_> =
                rustls_pki_types::CertificateDer::pem_slice_iter(&nodes[1].files().0)
                    .collect::<Result<_, _>>()
                    .unwrap_or_default();
            installs >= 2 && certkeeper::deploy::verify::check(&nginx.endpoint(), &chain).is_ok()
        },
    );
    assert!(!nodes[1].ck.daemon_log().contains("rolling back"));
    // Every node ran its own reload, once per certificate.
    for node in &nodes {
        let reloads = fs::read_to_string(node.ck.path("reloads.log")).unwrap_or_default();
        assert_eq!(reloads, "media\nmedia\n", "{}", node.name);
    }
    // Identical files everywhere, and a key that matches.
    let (chain, key) = nodes[0].files();
    assert!(common::key_matches(&chain, &key));
    for node in &nodes[1..] {
        assert_eq!(
            node.files(),
            (chain.clone(), key.clone()),
            "{} differs",
            node.name
        );
    }
    // The key reached etcd sealed, never in the clear.
    let record = etcd.get("/certkeeper/certs/media").expect("record in etcd");
    assert!(record.contains("BEGIN CERTIFICATE") && !record.contains("PRIVATE KEY"));
}

/// Anyone who may write etcd puts the first certificate's record back after a renewal: as it
/// was, and with its expiry raised past the current one's (so no longer sealed as it claims). No node installs it, no node
/// orders because of it, and the lease holder puts the current record back.
#[test]
fn a_replayed_older_record_is_refused_by_every_node() {
    const KEY: &str = "/certkeeper/certs/media";
    let (pebble, etcd, _dir, nodes, first) = cluster_with_a_certificate(3600);
    let old = etcd.get(KEY).expect("the first certificate's record");
    // A renewal before its time (cluster nodes take no `renew --force`): the lease holder's
    // certificate gains a name. Pebble dates certificates to the second, and the later expiry
    // wins: the renewal starts once the first certificate's second has passed.
    let issued = certkeeper::deploy::bundle::read_leaf(&nodes[0].files().0)
        .unwrap()
        .not_before;
    wait_until(
        &nodes,
        "a second after the first issuance",
        Duration::from_secs(5),
        || std::time::SystemTime::now() > issued + Duration::from_secs(1),
    );
    pebble.point("live.example.com", &ip(0));
    let text = fs::read_to_string(&nodes[0].ck.config).unwrap().replace(
        &format!("domains = [\"{NAME}\"]"),
        &format!("domains = [\"{NAME}\", \"live.example.com\"]"),
    );
    fs::write(&nodes[0].ck.config, text).unwrap();
    common::signal(
        &nodes[0].daemon.as_ref().unwrap().0,
        nix::sys::signal::Signal::SIGHUP,
    );
    let current = wait_for_one_certificate(
        &nodes,
        &[0, 1, 2],
        Some(&first),
        "the forced renewal on all three nodes",
        Duration::from_secs(40),
    );
    let serial_in_etcd = || {
        let record: serde_json::Value =
            serde_json::from_str(&etcd.get(KEY).unwrap_or_default()).unwrap_or_default();
        record["serial"].as_str().unwrap_or_default().to_string()
    };
    wait_until(
        &nodes,
        "the renewal's record in etcd",
        Duration::from_secs(20),
        || serial_in_etcd() == current,
    );
    let orders = pebble.orders();
    // The followers log the install after the files are swapped: the logs are read from there.
    let installed = |k: usize, serial: &str| {
        nodes[k].ck.daemon_log().lines().any(|line| {
            line.contains("installed the certificate another node published")
                && line.contains(serial)
        })
    };
    wait_until(
        &nodes,
        "the followers to log the install",
        Duration::from_secs(20),
        || installed(1, &current) && installed(2, &current),
    );
    let before: Vec<usize> = nodes.iter().map(|n| n.ck.daemon_log().len()).collect();
    let since_replay = |k: usize| nodes[k].ck.daemon_log()[before[k]..].to_string();

    // As it was: older than every node's, so the lease holder publishes its own over it.
    assert!(etcd.put(KEY, &old), "etcd took the replayed record");
    wait_until(
        &nodes,
        "the lease holder to put the current record back",
        Duration::from_secs(20),
        || serial_in_etcd() == current,
    );

    // With its expiry raised a day past the current certificate's: it does not open.
    let mut raised: serde_json::Value = serde_json::from_str(&old).unwrap();
    let current_record: serde_json::Value = serde_json::from_str(&etcd.get(KEY).unwrap()).unwrap();
    raised["not_after"] = (current_record["not_after"].as_u64().unwrap() + 86_400).into();
    assert!(etcd.put(KEY, &raised.to_string()));
    let refused = |k: usize| {
        since_replay(k).lines().any(|line| {
            line.contains(&first)
                && (line.contains("cannot install the certificate another node published")
                    || line.contains("refused the cluster's copy of the certificate"))
        })
    };
    wait_until(
        &nodes,
        "every node to refuse the raised record",
        Duration::from_secs(20),
        || (0..3).all(refused),
    );
    wait_until(
        &nodes,
        "the lease holder to put the current record back",
        Duration::from_secs(20),
        || serial_in_etcd() == current,
    );
    for (k, node) in nodes.iter().enumerate() {
        assert_eq!(
            node.serial().as_deref(),
            Some(current.as_str()),
            "{}",
            node.name
        );
        let log = since_replay(k);
        let reinstalled = log.lines().any(|line| {
            line.contains("installed the certificate another node published")
                && line.contains(&first)
        });
        assert!(!reinstalled, "{log}");
        assert!(!log.contains("renewal started"), "{log}");
    }
    assert!(since_replay(0).contains("refused the cluster's copy of the certificate"));
    assert_eq!(
        pebble.orders(),
        orders,
        "no order because of a replayed record"
    );
}

#[test]
fn a_lease_holder_killed_mid_renewal_is_replaced_and_the_renewal_finished() {
    let (pebble, etcd, _dir, mut nodes, first) = cluster_with_a_certificate(30);

    // Validation requests now reach node 2 through a proxy that holds them for 2 s: the
    // renewal is certainly in flight when the proxy sees the first one.
    let proxy = SlowProxy::start(&ip(3), pebble.http_port, &ip(2), Duration::from_secs(2));
    pebble.point(NAME, &ip(3));
    wait_until(
        &nodes,
        "the renewal's validation request",
        Duration::from_secs(40),
        || proxy.accepted() > 0,
    );
    let orders_at_kill = pebble.orders();
    nodes[0].kill();

    wait_for_one_certificate(
        &nodes,
        &[1, 2],
        Some(&first),
        "another node to finish the renewal",
        Duration::from_secs(40),
    );
    assert_eq!(
        pebble.orders(),
        orders_at_kill + 1,
        "one order to finish the renewal, beyond the interrupted one"
    );
    let leader = etcd.get("/certkeeper/leader").unwrap_or_default();
    assert!(
        leader == "n1" || leader == "n2",
        "the lease moved on, to {leader:?}"
    );
    let successor = nodes
        .iter()
        .find(|n| n.name == leader)
        .unwrap()
        .ck
        .daemon_log();
    assert!(successor.contains("this node holds the renewal lease"));
    assert!(successor.contains("certificate issued and deployed"));
    assert_eq!(nodes[1].files(), nodes[2].files());
    assert!(nodes[1].running() && nodes[2].running());
}

#[test]
fn without_etcd_nodes_keep_their_certificates_and_renew_nothing_until_it_is_back() {
    let (pebble, mut etcd, _dir, mut nodes, first) = cluster_with_a_certificate(60);
    let pem = fs::read(nodes[0].ck.path("out/fullchain.pem")).unwrap();
    let leaf = certkeeper::deploy::bundle::read_leaf(&pem).unwrap();
    let files: Vec<_> = nodes.iter().map(Node::files).collect();

    etcd.stop_all();
    // Past the renewal time (half of 60 s) and the expiry warning (at 50 s) with etcd away.
    let past_due = leaf.not_before + Duration::from_secs(51);
    common::wait_for(
        "the certificate's renewal time and expiry warning to pass",
        Duration::from_secs(90),
        || std::time::SystemTime::now() >= past_due,
        String::new,
    );
    assert_eq!(
        pebble.orders(),
        1,
        "nothing ordered while etcd is unreachable"
    );
    for (node, files) in nodes.iter_mut().zip(&files) {
        assert!(node.running(), "{} stopped", node.name);
        assert_eq!(&node.files(), files, "{} changed its files", node.name);
        let log = node.ck.daemon_log();
        assert!(log.contains("etcd is unreachable"), "{}:\n{log}", node.name);
        assert!(
            log.contains("renewals are failing: no node of the cluster has renewed it"),
            "{}:\n{log}",
            node.name
        );
    }

    etcd.start_all();
    wait_for_one_certificate(
        &nodes,
        &[0, 1, 2],
        Some(&first),
        "the renewal once etcd is back",
        Duration::from_secs(14),
    );
    assert_eq!(pebble.orders(), 2);
}

#[test]
fn a_lease_holder_cut_off_from_etcd_mid_order_abandons_it() {
    let (pebble, mut etcd, _dir, nodes, _) = cluster_with_a_certificate(30);
    let proxy = SlowProxy::start(&ip(3), pebble.http_port, &ip(2), Duration::from_secs(4));
    pebble.point(NAME, &ip(3));
    wait_until(
        &nodes,
        "the renewal's validation request",
        Duration::from_secs(40),
        || proxy.accepted() > 0,
    );
    // What the nodes serve while this order is in flight: the first certificate, unless pebble
    // reused the first authorization for an earlier renewal (it does now and then, even with
    // reuse turned off), which then needed no validation and was not held by the proxy.
    let first = nodes[0].serial().expect("node 0 serves a certificate");
    etcd.stop_all();
    // It cannot renew its lease, so it can no longer be sure it alone orders: it steps down
    // and gives the order up.
    wait_until(
        &nodes,
        "node 0 to give up its order",
        Duration::from_secs(10),
        || {
            let log = nodes[0].ck.daemon_log();
            log.contains("this node lost the renewal lease")
                && log.contains("the order in flight is abandoned")
        },
    );
    let orders = pebble.orders();
    assert_eq!(
        nodes
            .iter()
            .filter_map(Node::serial)
            .filter(|s| *s == first)
            .count(),
        3
    );

    etcd.start_all();
    wait_for_one_certificate(
        &nodes,
        &[0, 1, 2],
        Some(&first),
        "the renewal once etcd is back",
        Duration::from_secs(30),
    );
    assert_eq!(
        pebble.orders(),
        orders + 1,
        "one order to finish the renewal"
    );
}

/// The other nodes are the pre-flight's outside view by default. Split-horizon DNS, the case a
/// look from this host alone misses: node 0 resolves the name through the inside DNS (pebble's,
/// pointing at node 0), node 1 through the "public" one, a real BIND whose record is stale.
#[test]
fn the_other_nodes_look_at_the_names_from_where_they_stand() {
    let pebble = Pebble::start(None);
    let etcd = EtcdCluster::start(1);
    let public_dns = common::Bind::start("media IN A 127.0.0.9");
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let mut nodes: Vec<Node> = (0..2)
        .map(|k| Node::new(&pebble, &etcd, &secret, k))
        .collect();
    let edit = |node: &Node, from: &str, to: &str| {
        let text = fs::read_to_string(&node.ck.config).unwrap();
        assert!(text.contains(from), "{text}");
        fs::write(&node.ck.config, text.replace(from, to)).unwrap();
    };
    edit(&nodes[0], "preflight_before_order = false\n", "");
    edit(
        &nodes[1],
        &format!("resolvers = [\"{}\"]", pebble.dns_address()),
        &format!("resolvers = [\"{}\"]", public_dns.address()),
    );
    first_issuance(&pebble, &mut nodes);
    nodes[1].start();
    let announced = format!("http://{}:{}", ip(1), pebble.http_port);
    wait_until(
        &nodes,
        "node 1 to announce itself",
        Duration::from_secs(15),
        || etcd.get("/certkeeper/nodes/n1").as_deref() == Some(announced.as_str()),
    );

    let status = nodes[0].ck.ok(&["status"]);
    assert!(
        status.contains("nodes probing for the pre-flight: n0, n1"),
        "{status}"
    );

    // Through node 0's daemon: its own look passes, node 1's finds the stale record.
    let output = nodes[0].ck.run(&["check", "media"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{said}");
    let port = pebble.http_port;
    for expected in [
        format!(
            "from this host: http://{NAME}:{port}/ on 127.0.0.2 serves certkeeper's probe token"
        ),
        format!("from node n1: port {port} on 127.0.0.9 refused the connection"),
        format!("there, {NAME} resolves to 127.0.0.9, here it does not"),
    ] {
        assert!(
            said.contains(&expected),
            "missing \"{expected}\" in:\n{said}"
        );
    }

    // Before an order too (a dry run: the whole flow, pebble as its staging CA; HTTP-01 only,
    // so the order still goes out, and passes here). Node 0 remembers the pre-flight of its
    // first order, made before node 1 was up: a new vantage is asked all the same.
    let orders = pebble.orders();
    nodes[0].ck.ok(&["renew", "--dry-run", "media"]);
    assert_eq!(pebble.orders(), orders + 1);
    let log = nodes[0].ck.daemon_log();
    let warned = log
        .lines()
        .find(|l| l.contains("the pre-flight check expects http-01 to fail"))
        .unwrap_or_else(|| panic!("no pre-flight warning:\n{log}"));
    assert!(warned.contains("from node n1"), "{warned}");

    // Only nodes of the cluster may ask: no signature, or a made-up one (node "n0" in base64url,
    // the time right, the MAC not), is refused.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for authorization in [
        "",
        &format!(
            "Authorization: Certkeeper-Node bjA {now} {}\r\n",
            "A".repeat(43)
        ),
    ] {
        let mut stream = TcpStream::connect((ip(1), port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET /.well-known/certkeeper/probe?name={NAME}&token=abc&expected=def HTTP/1.1\r\n\
             Host: {NAME}\r\n{authorization}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }

    // With node 0's daemon stopped, a standalone `check` asks node 1 all the same, and leaves
    // no probe token in etcd.
    assert_eq!(etcd.count("/certkeeper/nodes/"), Some(2));
    nodes[0].stop();
    let output = nodes[0].ck.run(&["check", "media"]);
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("through the running daemon"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "from node n1: port {port} on 127.0.0.9 refused the connection"
        )),
        "{said}"
    );
    assert_eq!(etcd.count("/certkeeper/tokens/"), Some(0));
    nodes[0].start();
    wait_until(
        &nodes,
        "node 0's control socket",
        Duration::from_secs(10),
        || nodes[0].ck.path("state/control.sock").exists(),
    );

    // A node that died is said to be unreachable; it does not fail the check.
    nodes[1].kill();
    let output = nodes[0].ck.run(&["check", "media"]);
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "node n1 of the cluster could not be asked at {announced}"
        )),
        "{said}"
    );
}

/// A TCP proxy that holds each connection for `delay` before passing it on.
struct SlowProxy {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SlowProxy {
    fn start(ip: &str, port: u16, target_ip: &str, delay: Duration) -> SlowProxy {
        let listener = TcpListener::bind((ip, port)).expect("bind the slow proxy");
        listener.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let target = format!("{target_ip}:{port}");
        let (count, stopping) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(180);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let target = target.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = pipe(client, &target);
                });
            }
        });
        SlowProxy { accepted, stop }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request and its answer (the listener closes each connection after answering).
fn pipe(mut client: TcpStream, target: &str) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut server = TcpStream::connect(target)?;
    server.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = [0u8; 8192];
    let n = client.read(&mut request)?;
    server.write_all(&request[..n])?;
    let mut answer = Vec::new();
    let _ = server.read_to_end(&mut answer);
    client.write_all(&answer)?;
    client.shutdown(Shutdown::Both)
}

#[test]
fn talks_to_etcd_over_tls_with_a_client_certificate_and_a_password_and_checks_the_secret() {
    let pebble = Pebble::start(None);
    let etcd = EtcdCluster::start_secure("certkeeper", "node-password");
    let secure = etcd.secure.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let good = dir.path().join("good.password");
    let bad = dir.path().join("bad.password");
    fs::write(&good, "node-password\n").unwrap();
    fs::write(&bad, "not-the-password\n").unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other_secret = secret_file(other_dir.path());
    let mut nodes: Vec<Node> = [&secret, &secret, &other_secret]
        .iter()
        .enumerate()
        .map(|(k, secret)| Node::new(&pebble, &etcd, secret, k))
        .collect();
    for (node, password) in nodes.iter().zip([&good, &bad, &good]) {
        let text = fs::read_to_string(&node.ck.config)
            .unwrap()
            .replace("endpoints = [\"http://", "endpoints = [\"https://");
        let text = format!(
            "{text}ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nusername = \"certkeeper\"\npassword_file = \"{}\"\n",
            secure.ca.display(),
            secure.client_cert.display(),
            secure.client_key.display(),
            password.display()
        );
        fs::write(&node.ck.config, text).unwrap();
    }
    first_issuance(&pebble, &mut nodes);
    assert!(
        nodes[0]
            .ck
            .daemon_log()
            .contains("this node holds the renewal lease")
    );

    // A node with the wrong password gets nothing, and says why.
    nodes[1].start();
    wait_until(
        &nodes,
        "the wrong password to be reported",
        Duration::from_secs(20),
        || nodes[1].ck.daemon_log().contains("authentication failed"),
    );
    assert!(nodes[1].serial().is_none());
    let status = nodes[1].ck.run(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(
            "cluster: this node is n1; etcd refused auth/authenticate: etcdserver: authentication failed"
        ),
        "{status}"
    );

    // A node with another cluster secret cannot open the key, keeps nothing, and says why.
    nodes[2].start();
    wait_until(
        &nodes,
        "the wrong secret to be reported",
        Duration::from_secs(20),
        || {
            nodes[2]
                .ck
                .daemon_log()
                .contains("sealed with another cluster secret")
        },
    );
    assert!(nodes[2].serial().is_none());
    let status = String::from_utf8_lossy(&nodes[0].ck.run(&["status"]).stdout).to_string();
    assert!(
        status.contains("cluster: this node is n0; the renewal lease is held by n0; 1 of 1 certificates published in etcd"),
        "{status}"
    );
}

/// The etcd client against a real etcd: listings come in pages (250 keys, 100 a page) at one
/// revision, and a listing from a revision on holds only what changed since.
#[test]
fn the_etcd_client_pages_listings_and_lists_only_changes() {
    use certkeeper::cluster::etcd::Etcd;
    let etcd = EtcdCluster::start(1);
    let config = certkeeper::config::ClusterConfig {
        endpoints: vec![
            format!("http://127.0.0.1:{}", etcd.clients[0])
                .parse()
                .unwrap(),
        ],
        node: "n0".into(),
        prefix: "/certkeeper".into(),
        secret: zeroize::Zeroizing::new(vec![7; 32]),
        lease: Duration::from_secs(3),
        sync_interval: Duration::from_secs(1),
        ca_file: None,
        client_cert: None,
        auth: None,
        probe_url: None,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = Etcd::new(&config, Duration::from_secs(5)).unwrap();
        for k in 0..250 {
            let value = format!("value {k}");
            client
                .put(&format!("/p/{k:03}"), value.as_bytes(), None)
                .await
                .unwrap();
        }
        client.put("/q/outside", b"x", None).await.unwrap();
        let all = client.list("/p/", 0).await.unwrap();
        assert_eq!(all.entries.len(), 250);
        assert_eq!(all.entries[249].key, "/p/249");
        assert_eq!(all.entries[100].value, b"value 100");

        client.put("/p/007", b"changed", None).await.unwrap();
        let changed = client.list("/p/", all.revision + 1).await.unwrap();
        let keys: Vec<&str> = changed.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["/p/007"]);
        assert!(
            client
                .list("/p/", changed.revision + 1)
                .await
                .unwrap()
                .entries
                .is_empty()
        );

        // Only one holder of a key created under a lease; the key goes with the lease.
        let lease = client.grant(Duration::from_secs(3)).await.unwrap();
        assert!(client.create("/p/leader", b"n0", lease).await.unwrap());
        assert!(!client.create("/p/leader", b"n1", lease).await.unwrap());
        assert!(client.keep_alive(lease).await.unwrap());
        client.revoke(lease).await.unwrap();
        assert!(!client.keep_alive(lease).await.unwrap());
        assert_eq!(client.get("/p/leader").await.unwrap(), None);
    });
}
