//! The control socket against a running `certkeeper run` and a real pebble: `renew`, `check` and
//! `status` go through the daemon (its listener, its engine), a stranger is refused, a daemon
//! that dies mid-command is reported, and a second daemon is refused.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

use common::{Certkeeper, Pebble, require_root, signal};
use nix::sys::signal::Signal;

/// A daemon for `media.example.com` (its pre-flight resolves through challtestsrv, where every
/// name is 127.0.0.1, and probes the daemon's own listener), with its first certificate issued.
fn running(pebble: &Pebble) -> (Certkeeper, common::Killed) {
    let ck = Certkeeper::new(pebble, &["media.example.com"], "");
    let daemon = ck.spawn_daemon();
    ck.wait_until("the first certificate", Duration::from_secs(30), || {
        ck.settled(1)
    });
    ck.wait_until("the control socket", Duration::from_secs(10), || {
        ck.path("state/control.sock").exists()
    });
    (ck, daemon)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a one-off command in a thread of its own; join it for its output.
fn in_background(ck: &Certkeeper, args: &[&str]) -> std::thread::JoinHandle<Output> {
    let config = ck.config.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(config)
            .args(args)
            .output()
            .expect("run certkeeper")
    })
}

fn renewing(ck: &Certkeeper) -> bool {
    let output = ck.run(&["status", "--json"]);
    serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .is_ok_and(|rows| rows[0]["renewing"] == true)
}

#[test]
fn renew_check_and_status_go_through_the_running_daemon() {
    let pebble = Pebble::start(None);
    let (ck, _daemon) = running(&pebble);
    let (orders, issued) = (pebble.orders(), pebble.issued());

    // Freeze the CA so the renewal is still running while `status` asks.
    pebble.pause();
    let renew = in_background(&ck, &["renew", "--force", "media"]);
    common::wait_for(
        "status to show the renewal in flight",
        Duration::from_secs(10),
        || renewing(&ck),
        || ck.daemon_log(),
    );
    let table = ck.ok(&["status"]);
    assert!(table.contains("renewing now"), "{table}");
    assert!(table.contains("daemon: pid"), "{table}");
    pebble.resume();

    let output = renew.join().unwrap();
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("through the running daemon"), "{said}");
    assert!(said.contains("media: renewed, valid until"), "{said}");
    assert_eq!(pebble.orders(), orders + 1, "one order through the daemon");
    assert_eq!(
        pebble.issued(),
        issued + 1,
        "one certificate through the daemon"
    );
    ck.wait_until("the new version in place", Duration::from_secs(5), || {
        ck.settled(2)
    });

    // The pre-flight's probe is served by the daemon's own listener (the port is taken).
    let output = ck.run(&["check"]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("through the running daemon"), "{said}");
    assert!(
        said.contains("http-01 can succeed for every name"),
        "{said}"
    );

    // Not due: said, and nothing ordered.
    let said = ck.ok(&["renew"]);
    assert!(said.contains("not due until"), "{said}");
    assert_eq!(pebble.orders(), orders + 1);
}

#[test]
fn a_stranger_is_refused_at_the_socket() {
    if !require_root(
        "a_stranger_is_refused_at_the_socket",
        "it runs certkeeper as the user nobody",
    ) {
        return;
    }
    let pebble = Pebble::start(None);
    let (ck, _daemon) = running(&pebble);
    // Let nobody read the config and reach the socket's directory.
    for (path, mode) in [
        (ck.dir.path().to_path_buf(), 0o755),
        (ck.config.clone(), 0o644),
        (ck.path("state"), 0o711),
    ] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
    let as_nobody = || {
        common::program("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(common::BIN)
            .arg("--config")
            .arg(&ck.config)
            .arg("status")
            .output()
            .expect("setpriv")
    };
    // The socket's mode (0660) keeps nobody out (EX_NOPERM, as when the daemon refuses)...
    let output = as_nobody();
    let said = text(&output);
    assert_eq!(output.status.code(), Some(77), "{said}");
    assert!(said.contains("refused this user"), "{said}");
    // ...and with the mode opened up, the daemon's credential check still does.
    let socket = ck.path("state/control.sock");
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).unwrap();
    let output = as_nobody();
    let said = text(&output);
    assert_eq!(output.status.code(), Some(77), "{said}");
    assert!(said.contains("nobody may not control certkeeper"), "{said}");
    assert!(
        ck.daemon_log()
            .contains("nobody may not control certkeeper")
    );
}

#[test]
fn a_daemon_that_dies_mid_command_is_reported_and_a_second_daemon_refused() {
    let pebble = Pebble::start(None);
    let (ck, daemon) = running(&pebble);

    let second = ck.run(&["run"]);
    let said = text(&second);
    assert!(!second.status.success(), "{said}");
    assert!(
        said.contains("another certkeeper daemon answers on"),
        "{said}"
    );

    pebble.pause();
    let renew = in_background(&ck, &["renew", "--force"]);
    common::wait_for(
        "the renewal to start",
        Duration::from_secs(10),
        || renewing(&ck),
        || ck.daemon_log(),
    );
    signal(&daemon.0, Signal::SIGKILL);
    let output = renew.join().unwrap();
    pebble.resume();
    let said = text(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("the daemon went away"), "{said}");

    // The socket the killed daemon left behind: commands run standalone, a new daemon starts.
    let status = ck.run(&["status"]);
    assert!(
        text(&status).contains("running standalone"),
        "{}",
        text(&status)
    );
    let _again = ck.spawn_daemon();
    ck.wait_until(
        "a new daemon on the stale socket",
        Duration::from_secs(10),
        || text(&ck.run(&["status"])).contains("through the running daemon"),
    );
}

#[test]
fn reload_answers_whether_the_config_was_taken_and_a_broken_one_does_not_cut_off_the_daemon() {
    let pebble = Pebble::start(None);
    let (ck, _daemon) = running(&pebble);
    let said = ck.ok(&["reload"]);
    assert!(
        said.contains("configuration re-read: 1 certificate(s)"),
        "{said}"
    );

    // A broken file: `reload` (the unit's ExecReload=) fails with the reason, exit 78...
    let good = fs::read_to_string(&ck.config).unwrap();
    fs::write(&ck.config, format!("{good}chalenge = \"dns-01\"\n")).unwrap();
    let output = ck.run(&["reload"]);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(78), "{said}");
    assert!(
        said.contains("keeps the previous one") && said.contains("unknown key"),
        "{said}"
    );
    // ...while status and renew still reach the daemon, which runs on the previous config.
    let output = ck.run(&["status"]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains("running daemon's view") && said.contains("media.example.com"),
        "{said}"
    );
    let output = ck.run(&["renew"]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("not due until"), "{said}");
    // Fixed again: taken.
    fs::write(&ck.config, good).unwrap();
    ck.ok(&["reload"]);
}
