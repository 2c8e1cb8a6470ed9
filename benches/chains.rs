//! What choosing a chain costs: whole-process time of `renew --force` against a local pebble
//! offering one alternate chain, without `acme.preferred_chain`, preferring the default
//! chain's root (nothing more fetched) and preferring the alternate's (one more signed
//! request), interleaved, median of N each.
//!
//! `cargo bench --bench chains` (N from BENCH_N, default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

fn subject_common_name(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("root pem");
    let (_, cert) = X509Certificate::from_der(&der).expect("root x509");
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .expect("a common name");
    name.as_str().expect("text").to_string()
}

fn main() {
    let n = common::bench_n(500);
    let pebble = common::Pebble::start_with_alternate_roots(1);
    let ck = common::Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]); // the account and the first certificate
    let plain = fs::read_to_string(&ck.config).expect("config");
    let preferring = |root: u32| {
        let name = subject_common_name(&pebble.root_pem(root));
        plain.replacen(
            "[acme]\n",
            &format!("[acme]\npreferred_chain = \"{name}\"\n"),
            1,
        )
    };
    let configs = [
        ("no preferred_chain", plain.clone()),
        ("preferring the default chain's root", preferring(0)),
        ("preferring the alternate chain's root", preferring(1)),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); configs.len()];
    for _ in 0..n {
        for ((_, config), times) in configs.iter().zip(&mut samples) {
            fs::write(&ck.config, config).expect("config");
            let started = Instant::now();
            ck.ok(&["renew", "--force"]);
            times.push(started.elapsed());
        }
    }
    println!("one issuance (1 name), whole `certkeeper renew --force` process, median of {n}:");
    for ((label, _), times) in configs.iter().zip(samples) {
        let ms = common::median(times).as_secs_f64() * 1000.0;
        println!("  {label:<40} {ms:.1} ms");
    }
}
