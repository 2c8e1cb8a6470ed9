//! Operating certkeeper: systemd readiness and watchdog, metrics, notifications, status exit
//! codes, and the Debian package.

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, Certkeeper, Killed, Pebble, free_port};

#[test]
fn sd_notify_ready_after_the_listener_is_bound_then_watchdog_pings() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let socket_path = ck.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _daemon = Killed(
        Command::new(BIN)
            .arg("--config")
            .arg(&ck.config)
            .arg("run")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "200000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !messages.iter().any(|m: &String| m.contains("WATCHDOG=1")) && Instant::now() < deadline {
        let n = socket
            .recv(&mut buffer)
            .expect("a notification within 20 s");
        let message = String::from_utf8_lossy(&buffer[..n]).to_string();
        if message.contains("READY=1") {
            // Ready means the HTTP-01 listener already accepts connections.
            TcpStream::connect(("127.0.0.1", pebble.http_port))
                .expect("listener bound before READY=1");
        }
        messages.push(message);
    }
    let ready = messages
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("READY=1 sent");
    assert!(
        messages[ready].contains("STATUS=1 certificates; next: media at"),
        "{messages:?}"
    );
    let watchdog = messages
        .iter()
        .position(|m| m.contains("WATCHDOG=1"))
        .expect("WATCHDOG=1 sent");
    assert!(watchdog > ready, "{messages:?}");
}

#[test]
fn metrics_show_the_not_after_of_the_issued_certificate() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let port = free_port();
    let text = fs::read_to_string(&ck.config).unwrap().replace(
        "[daemon]\n",
        &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n"),
    );
    fs::write(&ck.config, text).unwrap();
    let _daemon = ck.spawn_daemon();
    // The outcome (and with it the challenge used) is recorded a moment after the swap.
    ck.wait_until(
        "the first certificate, recorded",
        Duration::from_secs(30),
        || {
            ck.settled(1)
                && fs::read_to_string(ck.path("state/certs/media/state.json"))
                    .is_ok_and(|state| state.contains("http-01"))
        },
    );
    let leaf = certkeeper::deploy::bundle::read_leaf(
        &fs::read(ck.current_dir().join("cert.pem")).unwrap(),
    )
    .unwrap();
    let expected = leaf
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();

    common::wait_for_port(port);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let value = |metric: &str| -> f64 {
        let line = response
            .lines()
            .find(|l| l.starts_with(metric))
            .unwrap_or_else(|| panic!("no {metric} in:\n{response}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let not_after = value("certkeeper_certificate_not_after_seconds{name=\"media\"}");
    assert!(
        (not_after - expected).abs() < 1.0,
        "{not_after} vs {expected}"
    );
    assert_eq!(
        value("certkeeper_certificate_failures{name=\"media\"}"),
        0.0
    );
    assert!(value("certkeeper_certificate_next_renewal_seconds{name=\"media\"}") < not_after);
    assert!(
        response
            .contains("certkeeper_certificate_challenge{name=\"media\",challenge=\"http-01\"} 1")
    );
    assert!(
        response.contains("certkeeper_build_info{version=\""),
        "{response}"
    );
    assert!(value("certkeeper_process_resident_memory_bytes") > 1e6);
}

/// Accepts one HTTP request, answers 200 and hands over its body.
fn webhook_receiver() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = reader.into_inner();
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = sender.send(String::from_utf8_lossy(&body).to_string());
    });
    (port, receiver)
}

#[test]
fn a_webhook_receives_the_failure_with_name_and_reason() {
    let pebble = Pebble::start(None);
    // HTTP-01 only: under `auto`, TLS-ALPN-01 would step in.
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "challenge = \"http-01\"");
    let (port, received) = webhook_receiver();
    // certkeeper listens where pebble does not look: the validation fails for real.
    let text = fs::read_to_string(&ck.config).unwrap().replace(
        &format!("127.0.0.1:{}", pebble.http_port),
        &format!("127.0.0.1:{}", free_port()),
    ) + &format!("\n[[notify]]\nwebhook = \"http://127.0.0.1:{port}/hook\"\n");
    fs::write(&ck.config, text).unwrap();
    let output = ck.run(&["renew"]);
    assert!(!output.status.success());
    let body = received
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook is called");
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["event"], "failure", "{event}");
    assert_eq!(event["certificate"], "media");
    assert_eq!(event["domains"][0], "media.example.com");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains("could not validate media.example.com"),
        "{message}"
    );
}

#[test]
fn status_exits_2_when_a_certificate_has_expired() {
    // Long enough that a loaded machine deploys it before it expires; then waited out.
    let pebble = Pebble::start(Some(Duration::from_secs(15)));
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    assert!(ck.run(&["status"]).status.success());
    ck.wait_until("the certificate expired", Duration::from_secs(60), || {
        ck.run(&["status"]).status.code() == Some(2)
    });
    let output = ck.run(&["status", "--json"]);
    assert_eq!(output.status.code(), Some(2));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows[0]["alert"], "EXPIRED");
    // The table says so in words, not as "-1 days left".
    let table = String::from_utf8_lossy(&ck.run(&["status"]).stdout).to_string();
    assert!(
        table.contains("expired") && !table.contains(" -1 "),
        "{table}"
    );
}

#[test]
fn the_debian_package_holds_binary_unit_config_and_man_page() {
    let deb = common::debian_package();
    let listing = common::program("dpkg")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for path in [
        "./usr/bin/certkeeper",
        "./usr/lib/systemd/system/certkeeper.service",
        "./etc/certkeeper/certkeeper.toml",
        "./usr/lib/sysusers.d/certkeeper.conf",
        "./usr/share/man/man1/certkeeper.1.gz",
        "./usr/share/bash-completion/completions/certkeeper",
    ] {
        assert!(
            listing.contains(path),
            "{path} missing from the package:\n{listing}"
        );
    }
    // Every document the README points to is shipped.
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for named in readme.split('`').filter(|s| s.starts_with("docs/")) {
        let shipped = format!("./usr/share/doc/certkeeper/{}", &named["docs/".len()..]);
        assert!(
            listing.contains(&shipped),
            "the README names {named}, which the package lacks:\n{listing}"
        );
    }
}

#[test]
fn an_exec_notifier_gets_the_success_event_as_json_on_stdin() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let received = ck.path("event.json");
    let text = fs::read_to_string(&ck.config).unwrap()
        + &format!(
            "\n[[notify]]\nexec = \"cat > {} && test \\\"$CERTKEEPER_EVENT\\\" = success\"\nevents = [\"success\"]\n",
            received.display()
        );
    fs::write(&ck.config, text).unwrap();
    ck.ok(&["renew"]);
    let event: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&received).unwrap()).unwrap();
    assert_eq!(event["event"], "success");
    assert_eq!(event["certificate"], "media");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("new certificate valid until")
    );
}

/// certkeeper with this host's clock two hours behind the CA's (libfaketime preloaded into
/// certkeeper alone, so that killing it kills the daemon; the CA keeps the real time).
fn two_hours_behind(ck: &Certkeeper, args: &[&str]) -> Command {
    const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "libfaketime is missing: run scripts/deps --tests (package faketime)"
    );
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(&ck.config)
        .args(args)
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", "-2h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    command
}

#[test]
fn a_clock_two_hours_behind_fails_check_and_orders_nothing() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");

    let output = two_hours_behind(&ck, &["check", "--json"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    println!("$ faketime -f -2h certkeeper check --json\n{said}");
    assert_eq!(output.status.code(), Some(1), "{said}");
    let report: serde_json::Value = serde_json::from_str(&said).unwrap();
    assert_eq!(report["clock_ok"], false, "{said}");
    assert!(said.contains("behind the CA's"), "{said}");

    // The daemon tries and orders nothing.
    let log = fs::File::create(ck.path("daemon.log")).unwrap();
    let daemon = Killed(
        two_hours_behind(&ck, &["run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    ck.wait_until("the daemon's refusal", Duration::from_secs(30), || {
        ck.daemon_log().contains("s behind the CA's")
    });
    assert_eq!((pebble.orders(), pebble.issued()), (0, 0));
    drop(daemon);

    // Nor does a one-off renewal, forced.
    let output = two_hours_behind(&ck, &["renew", "--force"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("$ faketime -f -2h certkeeper renew --force\n{said}");
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("s behind the CA's"), "{said}");
    assert_eq!((pebble.orders(), pebble.issued()), (0, 0), "{said}");

    // With the real time back, the same config renews.
    ck.ok(&["renew", "--force"]);
    assert_eq!(pebble.issued(), 1);
}

#[test]
fn renew_inside_backoff_with_no_certificate_is_no_success() {
    let pebble = Pebble::start_refusing(&["media.example.com"]);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    assert!(!ck.run(&["renew"]).status.success());
    // The failed attempt backs off; asked again at once, it is not tried, and not "ok" either.
    let output = ck.run(&["renew"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("$ certkeeper renew\n{said}");
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("has no certificate yet"), "{said}");
    assert!(said.contains("use --force"), "{said}");
}

/// `renew --json`: each certificate's outcome as a value a script can branch on — renewed,
/// failed (the CA refused the name) and deferred by the rate-limit budget, with its end —
/// where the lines say the same in words.
#[test]
fn renew_json_tells_renewed_failed_and_deferred_apart() {
    let pebble = Pebble::start_refusing(&["refused.example.com"]);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let mut config = fs::read_to_string(&ck.config).unwrap();
    config.push_str(
        "\n[[certificate]]\nname = \"bad\"\ndomains = [\"refused.example.com\"]\n\
         \n[[certificate]]\nname = \"later\"\ndomains = [\"later.example.com\"]\n\
         \n[acme.limits]\norders_per_3h = 2\n",
    );
    fs::write(&ck.config, config).unwrap();
    let output = ck.run(&["renew", "--json"]);
    assert!(
        !output.status.success(),
        "two certificates were not renewed"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcomes: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("renew --json prints one JSON list ({e}):\n{stdout}"));
    let of = |name: &str| {
        outcomes
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no outcome for {name}: {stdout}"))
            .clone()
    };
    let media = of("media");
    assert_eq!(media["result"]["status"], "renewed", "{media}");
    assert!(
        media["result"]["not_after"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(media["challenge"]["method"], "http-01", "{media}");
    let bad = of("bad");
    assert_eq!(bad["result"]["status"], "failed", "{bad}");
    assert!(
        bad["result"]["error"].as_str().unwrap().contains("refused"),
        "{bad}"
    );
    let later = of("later");
    assert_eq!(later["result"]["status"], "deferred", "{later}");
    assert_eq!(later["result"]["because"], "rate-limited", "{later}");
    assert!(later["result"]["until"].as_str().is_some(), "{later}");
    // pebble refuses the bad name's order outright, so it counts media's alone: "later" was
    // never ordered.
    assert_eq!(pebble.orders(), 1, "the deferred one was not ordered");
    // Without --json the same outcomes, in words.
    let output = ck.run(&["renew", "later"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("later: NOT RENEWED: ") && stdout.contains("raise [acme.limits]"),
        "{stdout}"
    );
    println!(
        "renew --json printed:\n{}",
        serde_json::to_string_pretty(&outcomes).unwrap()
    );
}
