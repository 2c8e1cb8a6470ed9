//! `certkeeper run` against a real pebble: renewing by itself, restarts, SIGHUP and SIGTERM.

use crate::common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Certkeeper, Pebble, key_matches, signal};
use nix::sys::signal::Signal;

/// Reads `current/` the way a careful server does (resolve the link once) plus the single-file
/// `combined.pem` in the output directory, and checks each pair matches and is not expired.
fn check_on_disk(ck: &Certkeeper) -> Result<(), String> {
    let Ok(dir) = fs::canonicalize(ck.path("state/certs/media/current")) else {
        return Ok(()); // nothing issued yet
    };
    let chain = fs::read(dir.join("fullchain.pem")).map_err(|e| e.to_string())?;
    let key = fs::read(dir.join("privkey.pem")).map_err(|e| e.to_string())?;
    if !key_matches(&chain, &key) {
        return Err(format!("{}: key does not match certificate", dir.display()));
    }
    let leaf = certkeeper::deploy::bundle::read_leaf(&chain).map_err(|e| e.to_string())?;
    if leaf.not_after <= std::time::SystemTime::now() {
        return Err(format!("{}: expired certificate in place", dir.display()));
    }
    if let Ok(combined) = fs::read(ck.path("out/combined.pem"))
        && !key_matches(&combined, &combined)
    {
        return Err("out/combined.pem: key does not match certificate".into());
    }
    Ok(())
}

#[test]
fn the_daemon_renews_short_lived_certificates_by_itself() {
    // 24 s certificates: renewed at about 16 s, so two renewals within about 40 s.
    let pebble = Pebble::start(Some(Duration::from_secs(24)));
    let ck = Arc::new(Certkeeper::new(&pebble, &["media.example.com"], ""));
    let mut daemon = ck.spawn_daemon();

    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let checker = {
        let (ck, stop, checks) = (ck.clone(), stop.clone(), checks.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                check_on_disk(&ck)?;
                checks.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
    };

    // The daemon logs a renewal after it has swapped the files: wait for both.
    ck.wait_until(
        "an initial certificate and two renewals",
        Duration::from_secs(90),
        || {
            ck.settled(3)
                && (ck.daemon_log())
                    .matches("certificate issued and deployed")
                    .count()
                    >= 3
        },
    );
    stop.store(true, Ordering::Relaxed);
    let checked = checker.join().expect("checker thread");
    assert_eq!(checked, Ok(()));
    assert!(
        checks.load(Ordering::Relaxed) > 100,
        "the checker must really have looked"
    );
    assert_eq!(
        pebble.orders(),
        ck.versions().len(),
        "one order per version, no extra orders"
    );
    let log = ck.daemon_log();
    assert!(
        log.matches("certificate issued and deployed").count() >= 3,
        "{log}"
    );

    signal(&daemon.0, Signal::SIGTERM);
    let mut status = None;
    common::wait_for(
        "the daemon to stop after SIGTERM",
        Duration::from_secs(10),
        || {
            status = daemon.0.try_wait().expect("wait");
            status.is_some()
        },
        String::new,
    );
    let status = status.expect("stopped");
    assert!(status.success(), "SIGTERM must be a clean exit: {status}");
}

#[test]
fn a_restarted_daemon_orders_nothing_for_valid_certificates() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    {
        let _daemon = ck.spawn_daemon();
        ck.wait_until("the first certificate", Duration::from_secs(30), || {
            ck.settled(1)
        });
    }
    assert_eq!(pebble.orders(), 1);
    // Only what the restarted daemon logs counts (the first may be stopped before it plans).
    let earlier = ck.daemon_log().len();
    let daemon = ck.spawn_daemon();
    ck.wait_until(
        "the restarted daemon to plan",
        Duration::from_secs(30),
        || {
            ck.daemon_log()
                .get(earlier..)
                .is_some_and(|log| log.contains("next renewal planned"))
        },
    );
    // It plans only after it has started whatever was due.
    drop(daemon);
    let log = ck.daemon_log();
    assert!(
        !log[earlier..].contains("renewal started"),
        "a restart must not re-order a valid certificate:\n{log}"
    );
    assert_eq!(pebble.orders(), 1);
    assert_eq!(ck.versions().len(), 1);
}

#[test]
fn sighup_rereads_the_config_and_a_bad_config_keeps_the_old_one() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let daemon = ck.spawn_daemon();
    ck.wait_until("the first certificate", Duration::from_secs(30), || {
        ck.settled(1)
    });

    let good = fs::read_to_string(&ck.config).unwrap();
    fs::write(&ck.config, good.replace("listen =", "lissen =")).unwrap();
    signal(&daemon.0, Signal::SIGHUP);
    ck.wait_until(
        "the invalid config to be reported",
        Duration::from_secs(10),
        || ck.daemon_log().contains("keeping the previous one"),
    );
    assert!(
        ck.daemon_log().contains("lissen"),
        "the error must name the key"
    );

    let more = good.replace(
        "\"media.example.com\"]",
        "\"media.example.com\", \"edge.example.com\"]",
    );
    fs::write(&ck.config, more).unwrap();
    signal(&daemon.0, Signal::SIGHUP);
    ck.wait_until(
        "a certificate that adds the new name",
        Duration::from_secs(30),
        || ck.settled(2),
    );
    let leaf = certkeeper::deploy::bundle::read_leaf(
        &fs::read(ck.current_dir().join("cert.pem")).unwrap(),
    )
    .unwrap();
    assert!(
        leaf.names.contains(&"edge.example.com".to_string()),
        "{:?}",
        leaf.names
    );
}
