//! The port-80 listener under load, on loopback: requests per second with wrk against the
//! daemon and against nginx in the same run (both closing each connection after its answer,
//! alternated), resident memory of the daemon while 10,000 idle connections are open, the
//! latency of a request during that, and whether the daemon still renews (a real pebble
//! validation) while wrk floods it. Prints figures; asserts nothing.
//!
//! `cargo bench --bench listener`; with CERTKEEPER_BIN=path, the daemon is that binary (an
//! earlier build) instead of this tree's.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The descriptors `pid` holds (its sockets, mostly).
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// wrk against `port` for 10 s: ("N", "socket errors …"), or None without wrk.
fn flood(port: u16) -> Option<(String, String)> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            "-c100",
            "-d10s",
            &format!("http://127.0.0.1:{port}/.well-known/acme-challenge/x"),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .map_or("?".to_string(), |r| r.trim().to_string());
    let errors = text
        .lines()
        .find(|l| l.contains("Socket errors"))
        .unwrap_or("no socket errors")
        .trim()
        .to_string();
    Some((rps, errors))
}

fn get(port: u16, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /.well-known/acme-challenge/probe HTTP/1.1\r\nHost: x\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    if response.starts_with("HTTP/1.1 404") {
        Ok(started.elapsed())
    } else {
        Err(format!("unexpected answer: {response:.40}"))
    }
}

fn main() {
    // 10,000 client sockets here, as many on the daemon's side.
    let _ =
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 65_536, 65_536);
    // 20-second certificates: the daemon renews every ~10 s, so renewals fall inside the flood.
    let pebble = common::Pebble::start(Some(Duration::from_secs(20)));
    let ck = common::Certkeeper::new(&pebble, &["media.example.com"], "");
    let daemon = match std::env::var("CERTKEEPER_BIN") {
        Ok(bin) => ck.spawn_daemon_of(&bin),
        Err(_) => ck.spawn_daemon(),
    };
    let pid = daemon.0.id();
    ck.wait_until("the first certificate", Duration::from_secs(30), || {
        ck.settled(1)
    });
    let port = pebble.http_port;
    println!(
        "listener on 127.0.0.1:{port}; idle daemon resident memory {} KiB",
        resident_kib(pid)
    );

    // 1. A flood of requests, and renewals during it; nginx, flooded the same way in turn.
    let nginx = common::Nginx::start_for_load(common::free_port());
    let versions_before = ck.versions().len();
    for round in 1..=2 {
        for (server, at) in [("certkeeper", port), ("nginx", nginx.port)] {
            match flood(at) {
                Some((rps, errors)) => println!(
                    "wrk, 100 connections for 10 s, round {round}: {server:<10} {rps} requests/s; {errors}"
                ),
                None => println!("wrk is not installed (apt-get install wrk): flood skipped"),
            }
        }
    }
    println!(
        "renewals completed during the floods (real pebble validations): {}; resident memory after: {} KiB",
        ck.versions().len().saturating_sub(versions_before),
        resident_kib(pid)
    );
    drop(nginx);

    // 2. 10,000 idle connections (bounded: 10,000 attempts, 1 s connect timeout each, 60 s in all).
    let opened = Instant::now();
    let deadline = opened + Duration::from_secs(60);
    let mut idle = Vec::new();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut refused = 0;
    for _ in 0..10_000 {
        if Instant::now() > deadline {
            break;
        }
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(stream) => idle.push(stream),
            Err(_) => refused += 1,
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "{} idle connections opened in {:.1} s ({} could not connect): the daemon holds {} sockets, resident memory {} KiB",
        idle.len(),
        opened.elapsed().as_secs_f64(),
        refused,
        open_files(pid),
        resident_kib(pid)
    );
    match get(port, Duration::from_secs(10)) {
        Ok(latency) => println!(
            "a request while they are open: answered in {:.1} ms",
            latency.as_secs_f64() * 1000.0
        ),
        Err(e) => println!("a request while they are open: FAILED ({e})"),
    }
    let renewed_before = ck.versions().len();
    std::thread::sleep(Duration::from_secs(12));
    println!(
        "renewals while the idle connections were open: {} (each a real validation)",
        ck.versions().len().saturating_sub(renewed_before)
    );
    drop(idle);
    std::thread::sleep(Duration::from_secs(6));
    println!(
        "after they closed: daemon resident memory {} KiB",
        resident_kib(pid)
    );
}
