//! The port-80 listener of a running daemon under attack, pass or fail: a few thousand idle
//! connections, slowloris clients, a huge header, an unread request body and probing paths
//! are all bounded in time and memory, while the CA's real HTTP-01 validations still succeed.
//! (`cargo bench --bench listener` measures the same at a larger scale.)

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Certkeeper, Pebble};

const IDLE_CONNECTIONS: usize = 2_000;
/// Resident memory the daemon may use while holding them (it idles at about 11 MiB).
const MEMORY_LIMIT_KIB: u64 = 96 * 1024;

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(25)))
        .expect("read timeout");
    stream
}

/// Sends `raw` and reads the answer until the server closes; how long that took.
fn exchange(port: u16, raw: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = connect(port);
    let _ = stream.write_all(raw);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

/// How long until the server closes `stream` (reads return 0 or fail), at most 25 s.
fn closed_after(stream: &mut TcpStream, started: Instant) -> Duration {
    let mut buffer = [0u8; 512];
    for _ in 0..1_000 {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    started.elapsed()
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn raise_own_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
}

#[test]
fn the_listener_under_attack_stays_bounded_and_validations_still_succeed() {
    raise_own_file_limit();
    // 24-second certificates: the daemon renews every dozen seconds, so real validations
    // happen while the attack goes on.
    let pebble = Pebble::start(Some(Duration::from_secs(24)));
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let daemon = ck.spawn_daemon();
    let pid = daemon.0.id();
    ck.wait_until("the first certificate", Duration::from_secs(30), || {
        ck.settled(1)
    });
    let port = pebble.http_port;

    // Idle connections that never send a byte: held briefly, then cut off.
    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS).map(|_| connect(port)).collect();
    let (answer, took) = exchange(
        port,
        b"GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.1 404") && took < Duration::from_secs(1),
        "a request among {IDLE_CONNECTIONS} idle connections: {took:?} {answer}"
    );
    let resident = resident_kib(pid);
    eprintln!(
        "{IDLE_CONNECTIONS} idle connections: daemon resident {} MiB, a request answered in {took:?}",
        resident / 1024
    );
    assert!(
        resident > 0 && resident < MEMORY_LIMIT_KIB,
        "resident memory {resident} KiB"
    );
    let first = closed_after(&mut idle[0], opened);
    let last = closed_after(&mut idle[IDLE_CONNECTIONS - 1], opened);
    eprintln!("idle connections cut off after {first:?} (first) / {last:?} (last)");
    assert!(
        first.max(last) < Duration::from_secs(8),
        "idle connections were held {first:?} / {last:?}"
    );
    drop(idle);

    // While the CA validates, an attacker keeps re-opening idle connections (bounded: at most
    // 60 rounds of 200).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reopener = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            for _ in 0..60 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                held.extend((0..200).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()));
                if held.len() > IDLE_CONNECTIONS {
                    held.drain(..200);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    // Slowloris: a header byte every 300 ms never completes a request.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut stream = connect(port);
                let _ = stream.write_all(b"GET /.well-known/acme-challenge/x HTTP/1.1\r\n");
                for _ in 0..60 {
                    if stream.write_all(b"X").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                    if started.elapsed() > Duration::from_secs(18) {
                        break;
                    }
                }
                closed_after(&mut stream, started)
            })
        })
        .collect();

    // A 1 MiB header line, and a request announcing a 1 GiB body.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (answer, took) = exchange(port, huge.as_bytes());
    assert!(
        !answer.starts_with("HTTP/1.1 200") && took < Duration::from_secs(5),
        "huge header: {took:?} {}",
        answer.lines().next().unwrap_or("(closed)")
    );
    let (answer, took) = exchange(
        port,
        b"POST /.well-known/acme-challenge/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\nabc",
    );
    assert!(
        answer.starts_with("HTTP/1.1 404") && took < Duration::from_secs(5),
        "unread body: {took:?} {answer}"
    );
    for path in [
        "/.well-known/acme-challenge/../../../etc/shadow",
        "/.well-known/acme-challenge/%2e%2e%2fstate",
        "/.well-known/acme-challenge/a%00b",
        "//.well-known/acme-challenge/x",
        "/.well-known/acme-challenge/",
    ] {
        let (answer, _) = exchange(
            port,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{path}: {answer}"
        );
    }

    // A flood of small requests from four clients (bounded: 4 x 500).
    let flood: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..500)
                    .filter(|_| {
                        exchange(
                            port,
                            b"GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: x\r\n\r\n",
                        )
                        .0
                        .starts_with("HTTP/1.1 404")
                    })
                    .count()
            })
        })
        .collect();

    // Meanwhile the CA still validates: two more renewals complete.
    let versions = ck.versions().len();
    ck.wait_until(
        "renewals during the attack",
        Duration::from_secs(60),
        || ck.settled(versions + 2),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reopener.join().unwrap();
    let resident = resident_kib(pid);
    eprintln!(
        "after slowloris, flood and re-opened idle connections: daemon resident {} MiB",
        resident / 1024
    );
    assert!(
        resident < MEMORY_LIMIT_KIB,
        "resident memory {resident} KiB"
    );
    let answered: usize = flood.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 2_000, "every flood request got its 404");

    for thread in slow {
        let closed = thread.join().unwrap();
        assert!(
            closed < Duration::from_secs(10),
            "a slowloris client was cut off only after {closed:?}"
        );
    }
    drop(daemon);
}
