//! No reader ever sees a new certificate with an old key while renewals swap `current`.

use crate::common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Certkeeper, Pebble, key_matches};

#[test]
fn thirty_renewals_never_show_a_reader_a_mismatched_pair() {
    let pebble = Pebble::start(None);
    let ck = Arc::new(Certkeeper::new(&pebble, &["media.example.com"], ""));
    ck.ok(&["renew"]);

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (ck, stop) = (ck.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut reads, mut mismatches) = (0u64, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                // A server that opens current/ once, and one that reads the combined file.
                let dir = fs::canonicalize(ck.path("state/certs/media/current")).expect("current");
                let chain = fs::read(dir.join("fullchain.pem")).expect("fullchain");
                let key = fs::read(dir.join("privkey.pem")).expect("privkey");
                let combined =
                    fs::read(ck.path("state/certs/media/current/combined.pem")).expect("combined");
                for (what, ok) in [
                    ("current/ pair", key_matches(&chain, &key)),
                    ("combined.pem", key_matches(&combined, &combined)),
                ] {
                    if !ok {
                        mismatches.push(format!("{what} in {}", dir.display()));
                    }
                }
                reads += 1;
            }
            (reads, mismatches)
        })
    };

    let mut versions = std::collections::HashSet::new();
    for _ in 0..30 {
        ck.ok(&["renew", "--force"]);
        versions.insert(ck.current_dir());
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, mismatches) = reader.join().expect("reader thread");
    assert_eq!(
        versions.len(),
        30,
        "each renewal must install a new version"
    );
    assert!(mismatches.is_empty(), "{mismatches:?}");
    assert!(
        reads > 100,
        "the reader must really have raced the renewals ({reads} reads)"
    );
    println!("{reads} consistent reads during 30 renewals");
}
