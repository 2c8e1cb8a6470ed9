//! A small network of namespaces the test creates: an "internet" segment (203.0.113.0/24)
//! with a server at 203.0.113.1, a router whose outside address is 203.0.113.10 and which
//! masquerades a LAN (192.168.77.0/24), and a host at 192.168.77.2 behind it. Nothing is
//! connected to the machine's own network. Deleted on drop.

use std::process::Command;

use super::{program, require};

pub const SERVER: &str = "203.0.113.1";
pub const ROUTER_PUBLIC: &str = "203.0.113.10";
pub const HOST: &str = "192.168.77.2";

pub struct NatLab {
    pub internet: String,
    pub router: String,
    pub host: String,
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a network set-up command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl NatLab {
    /// `tag` keeps the namespaces of concurrent tests apart.
    pub fn new(tag: &str) -> NatLab {
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let lab = NatLab {
            internet: format!("ckin{id}"),
            router: format!("ckrt{id}"),
            host: format!("ckho{id}"),
        };
        for ns in [&lab.internet, &lab.router, &lab.host] {
            run(program("ip").args(["netns", "add", ns]));
            run(lab.exec(ns).args(["ip", "link", "set", "lo", "up"]));
        }
        // internet <-> router (wan), router (lan) <-> host.
        let link = |a: &str, a_if: &str, b: &str, b_if: &str| {
            run(program("ip").args([
                "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
            ]));
        };
        link(&lab.internet, "inet0", &lab.router, "wan0");
        link(&lab.router, "lan0", &lab.host, "eth0");
        let address = |ns: &str, ip: &str, dev: &str| {
            run(lab.exec(ns).args(["ip", "addr", "add", ip, "dev", dev]));
            run(lab.exec(ns).args(["ip", "link", "set", dev, "up"]));
        };
        address(&lab.internet, "203.0.113.1/24", "inet0");
        address(&lab.router, "203.0.113.10/24", "wan0");
        address(&lab.router, "192.168.77.1/24", "lan0");
        address(&lab.host, "192.168.77.2/24", "eth0");
        run(lab
            .exec(&lab.host)
            .args(["ip", "route", "add", "default", "via", "192.168.77.1"]));
        run(lab
            .exec(&lab.router)
            .args(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]));
        lab.iptables(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan0",
            "-j",
            "MASQUERADE",
        ]);
        lab
    }

    /// `ip netns exec NS`, ready for the program and its arguments.
    pub fn exec(&self, ns: &str) -> Command {
        let mut command = program("ip");
        command.args(["netns", "exec", ns]);
        command
    }

    /// A rule in the router's packet filter.
    pub fn iptables(&self, rule: &[&str]) {
        run(self.exec(&self.router).arg(require("iptables")).args(rule));
    }

    /// The router forwards TCP `port` of its outside address to the host, from outside only.
    pub fn forward_from_outside(&self, port: u16) {
        self.dnat_to_host(&["-i", "wan0"], port);
    }

    /// The router forwards TCP `port` of its outside address to the host for the LAN only
    /// (hairpin NAT): a check from the host succeeds where the outside is not let in.
    pub fn hairpin_only(&self, port: u16) {
        self.dnat_to_host(&["-i", "lan0", "-d", ROUTER_PUBLIC], port);
        let port = port.to_string();
        self.iptables(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "lan0",
            "-s",
            "192.168.77.0/24",
            "-d",
            HOST,
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "MASQUERADE",
        ]);
    }

    /// Sends TCP `port` of packets matching `matching` to the same port of the host.
    fn dnat_to_host(&self, matching: &[&str], port: u16) {
        let to = format!("{HOST}:{port}");
        let port = port.to_string();
        let mut rule = vec!["-t", "nat", "-A", "PREROUTING"];
        rule.extend_from_slice(matching);
        rule.extend([
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "DNAT",
            "--to-destination",
            &to,
        ]);
        self.iptables(&rule);
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in [&self.internet, &self.router, &self.host] {
            let _ = program("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A single network namespace with its loopback up, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// `tag` keeps the namespaces of concurrent tests apart.
    pub fn new(tag: &str) -> Netns {
        let name = format!("ck-{tag}-{}", std::process::id());
        run(program("ip").args(["netns", "add", &name]));
        run(program("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]));
        Netns(name)
    }
}

impl Netns {
    /// A packet filter in this namespace that drops TCP to `port` (a firewall that drops).
    pub fn drop_tcp(&self, port: u16) {
        self.drop_tcp_with("iptables", port);
    }

    /// The same over IPv6.
    pub fn drop_tcp6(&self, port: u16) {
        self.drop_tcp_with("ip6tables", port);
    }

    fn drop_tcp_with(&self, filter: &str, port: u16) {
        run(program("ip")
            .args(["netns", "exec", &self.0])
            .arg(require(filter))
            .args([
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-j",
                "DROP",
            ]));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = program("ip").args(["netns", "del", &self.0]).status();
    }
}
