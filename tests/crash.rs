//! Crash safety: `kill -9` a renewal at random moments, 100 times. After each kill, `current/`
//! and the output directory (a link to it) hold a matching pair, and so does the single-file
//! `combined` output; single output files that are written one by one are repaired by the
//! next run.

use crate::common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Certkeeper, Pebble, key_matches};

const RUNS: usize = 100;

#[test]
fn kill_9_at_random_points_never_leaves_a_mismatched_pair() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let text = fs::read_to_string(&ck.config).unwrap()
        + "fullchain = \"single/fullchain.pem\"\nkey = \"single/privkey.pem\"\ncombined = \"single/combined.pem\"\n";
    fs::write(&ck.config, text).unwrap();
    ck.ok(&["renew"]);

    // How long a whole renewal takes here, so the kills spread over all of it.
    let started = Instant::now();
    ck.ok(&["renew", "--force"]);
    let window = (started.elapsed() * 3 / 2).max(Duration::from_millis(20));

    let (mut completed, mut single_pair_torn) = (0, 0);
    for run in 0..RUNS {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&ck.config)
            .args(["renew", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start renew");
        std::thread::sleep(window.mul_f64(fastrand::f64()));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("wait");
        if status.success() {
            completed += 1;
        }

        let current = fs::canonicalize(ck.path("state/certs/media/current"))
            .expect("current must always resolve");
        for dir in [current.clone(), fs::canonicalize(ck.path("out")).unwrap()] {
            let chain = fs::read(dir.join("fullchain.pem")).unwrap();
            let key = fs::read(dir.join("privkey.pem")).unwrap();
            assert!(
                key_matches(&chain, &key),
                "run {run}: mismatched pair in {}",
                dir.display()
            );
        }
        let combined = fs::read(ck.path("single/combined.pem")).unwrap();
        assert!(
            key_matches(&combined, &combined),
            "run {run}: torn combined.pem"
        );
        let single_chain = fs::read(ck.path("single/fullchain.pem")).unwrap();
        if !key_matches(
            &single_chain,
            &fs::read(ck.path("single/privkey.pem")).unwrap(),
        ) {
            single_pair_torn += 1;
        }
    }

    // The next run repairs single files and sweeps what killed runs left behind.
    ck.ok(&["renew"]);
    let current = fs::canonicalize(ck.path("state/certs/media/current")).unwrap();
    for file in ["fullchain.pem", "privkey.pem", "combined.pem"] {
        assert_eq!(
            fs::read(ck.path("single").join(file)).unwrap(),
            fs::read(current.join(file)).unwrap(),
            "{file} repaired to match current"
        );
    }
    let leftovers: Vec<String> = fs::read_dir(ck.path("single"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        completed < RUNS,
        "the kills must land inside renewals ({completed} of {RUNS} completed)"
    );
    println!(
        "{RUNS} kills: {completed} renewals completed first; single fullchain/key pair torn {single_pair_torn} times (repaired at next run)"
    );
}
