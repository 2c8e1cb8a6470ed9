//! `certkeeper account show|rollover|deactivate` against pebble: a rollover followed by
//! renewals with the new key (standalone and through the daemon), the CA refusing the old key,
//! a rollover cut short at the worst moment and kill -9 at random points (the next renewal
//! still works), and a deactivation followed by a new account.

use crate::common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Certkeeper, Pebble};

fn account_file(ck: &Certkeeper) -> std::path::PathBuf {
    let dir = ck.path("state/accounts");
    fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("an account file")
}

fn account_url(ck: &Certkeeper) -> String {
    let shown = ck.ok(&["account", "show"]);
    shown
        .lines()
        .find_map(|l| l.strip_prefix("account: "))
        .unwrap_or_else(|| panic!("no account line: {shown}"))
        .to_string()
}

#[test]
fn rollover_then_renewals_use_the_new_key_and_a_cut_short_rollover_recovers() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let file = account_file(&ck);
    let (url, old) = (account_url(&ck), fs::read(&file).unwrap());

    let said = ck.ok(&["account", "rollover"]);
    assert!(said.contains("the CA confirmed the new key"), "{said}");
    let new = fs::read(&file).unwrap();
    assert_ne!(old, new, "new credentials stored");
    assert_eq!(account_url(&ck), url, "the same account");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    ck.ok(&["renew", "--force"]);

    // The CA refuses the old key from now on.
    fs::write(&file, &old).unwrap();
    let refused = ck.run(&["renew", "--force"]);
    assert!(!refused.status.success(), "the old key still works?");

    // The worst moment to die: the CA has the new key, the file still the old one. The
    // marker left behind lets the next renewal register a new account instead of failing.
    fs::write(
        file.with_extension("rollover"),
        "a key rollover is under way\n",
    )
    .unwrap();
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("renewed"), "{said}");
    assert_ne!(account_url(&ck), url, "a new account after the lost key");
    assert!(!file.with_extension("rollover").exists());

    // kill -9 at random points of a rollover: every next renewal works.
    for run in 0..8 {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&ck.config)
            .args(["account", "rollover"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..120)));
        let _ = child.kill();
        let _ = child.wait();
        let output = ck.run(&["renew", "--force"]);
        assert!(
            output.status.success(),
            "run {run}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn through_the_daemon_and_deactivation() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let _daemon = ck.spawn_daemon();
    ck.wait_until("the first certificate", Duration::from_secs(30), || {
        ck.settled(1)
    });
    let url = account_url(&ck);
    let output = ck.run(&["account", "rollover"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("through the running daemon"));
    // The daemon's own renewals use the new key at once.
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");

    let unconfirmed = ck.run(&["account", "deactivate"]);
    assert_eq!(unconfirmed.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    let said = ck.ok(&["account", "deactivate", "--yes"]);
    assert!(said.contains("the account is deactivated"), "{said}");
    // The next order registers a new account.
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    assert_ne!(account_url(&ck), url);
}
