//! `certkeeper probe-server` on loopback: only holders of the secret are answered, each client
//! gets 30 probes a minute, and loopback targets are refused. (What it sees from outside, and
//! how the pre-flight uses it: tests/nat.rs.)

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use common::{BIN, Killed, Pebble, free_port};

fn ask(port: u16, secret: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("probe server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /probe?name=media.example.com&token=abc&expected=def HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Authorization: Bearer {secret}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn strangers_are_refused_and_each_client_is_rate_limited() {
    let pebble = Pebble::start(None); // its challtestsrv answers 127.0.0.1 for every name
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "s3cret-for-the-probe-server\n").unwrap();
    let port = free_port();
    let child = std::process::Command::new(BIN)
        .args(["probe-server", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--token-file")
        .arg(&secret)
        .args(["--resolver", &pebble.dns_address()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the probe server");
    let _server = Killed(child);
    common::wait_for(
        "the probe server to listen",
        Duration::from_secs(10),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        String::new,
    );

    assert!(ask(port, "wrong").starts_with("HTTP/1.1 401"));
    // media.example.com is 127.0.0.1 here: refused as loopback, not fetched.
    let first = ask(port, "s3cret-for-the-probe-server");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        first.contains("refused to fetch from 127.0.0.1 (loopback)"),
        "{first}"
    );
    // 30 a minute per client, wrong guesses counted: the 31st is turned away, guess or not.
    let statuses: Vec<bool> = (2..30)
        .map(|_| ask(port, "s3cret-for-the-probe-server").starts_with("HTTP/1.1 200"))
        .collect();
    assert!(statuses.iter().all(|ok| *ok), "{statuses:?}");
    let over = ask(port, "s3cret-for-the-probe-server");
    assert!(over.starts_with("HTTP/1.1 429"), "{over}");
    let guess = ask(port, "another-guess");
    assert!(guess.starts_with("HTTP/1.1 429"), "{guess}");
}

#[test]
fn a_short_shared_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "x\n").unwrap();
    let log = dir.path().join("server.log");
    let child = std::process::Command::new(BIN)
        .args([
            "probe-server",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--token-file")
        .arg(&secret)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the probe server");
    // Bounded: a server that accepts the token runs on, and fails the test here.
    let mut server = Killed(child);
    common::wait_for(
        "the probe server to refuse its token and exit",
        Duration::from_secs(10),
        || matches!(server.0.try_wait(), Ok(Some(_))),
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains("write at least 16 random ones"), "{said}");
}
