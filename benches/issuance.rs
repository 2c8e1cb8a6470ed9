//! Issuance speed against a local pebble (PEBBLE_VA_NOSLEEP, 5% bad nonces), side by side with
//! the floor, interleaved:
//! - the floor: a minimal in-process client (instant-acme over one kept-alive connection with
//!   TCP_NODELAY, an existing account, an in-process HTTP-01 responder), one order after
//!   another: the CA's own round trips and little else. Twice: polling every millisecond
//!   (the CA's verdict seen as soon as it is there; no client would poll a real CA so), and
//!   polling as a plain client does (from 10 ms, 1.6x longer each time: certkeeper's
//!   schedule before it watched for the CA's fetches);
//! - the floor as a whole process: the same minimal client (polling every millisecond) run as
//!   a process of its own per certificate, as certkeeper is: process start, a new connection
//!   (TLS handshake, directory), the order, exit; no config, no pre-flight, no file written;
//! - certkeeper, whole process: `certkeeper renew --force` with an existing account, as an
//!   operator would run it (process start, config, pre-flight, order, files synced, state);
//! - with BEFORE_BIN=path, the same for another certkeeper binary (an earlier build).
//!
//! Each certificate names two names. Prints the median and 90th percentile wall time, CPU per
//! certificate for the processes, and the ratio of each median to the floor's.
//!
//! `cargo bench --bench issuance` (N from BENCH_N, default 20).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder,
    RetryPolicy,
};
use nix::sys::resource::{UsageWho, getrusage};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const NAMES: [&str; 2] = ["media.example.com", "live.example.com"];

fn children_cpu() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let (user, system) = (usage.user_time(), usage.system_time());
    let micros = (user.tv_sec() + system.tv_sec()) * 1_000_000 + user.tv_usec() + system.tv_usec();
    Duration::from_micros(micros as u64)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The minimal client: an account on one kept-alive HTTPS connection with TCP_NODELAY.
struct Floor {
    account: Account,
    policy: RetryPolicy,
    answers: Arc<Mutex<HashMap<String, String>>>,
    port: u16,
}

/// Where the floor finds pebble: its directory, the root of its HTTPS certificate, and the
/// port its validator fetches HTTP-01 answers from. Passed to a whole-process floor in
/// [`CHILD`].
struct Ca {
    directory_url: String,
    tls_root: String,
    http_port: u16,
}

impl Ca {
    fn of(pebble: &common::Pebble) -> Ca {
        Ca {
            directory_url: pebble.directory_url.clone(),
            tls_root: pebble.tls_root.display().to_string(),
            http_port: pebble.http_port,
        }
    }
}

/// Set in a whole-process floor's environment: directory, TLS root, HTTP port and credentials
/// file, one a line (a path may hold spaces).
const CHILD: &str = "ISSUANCE_FLOOR_PROCESS";

impl Floor {
    /// A floor with a new account; and that account's credentials (JSON).
    async fn new(ca: &Ca, first_poll: Duration, backoff: f32) -> (Floor, String) {
        let contact = ["mailto:floor@example.com"];
        let (account, credentials) = Account::builder_with_http(Box::new(Self::client(ca)))
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                ca.directory_url.clone(),
                None,
            )
            .await
            .expect("the floor's account");
        let credentials = serde_json::to_string(&credentials).expect("credentials");
        (Self::with(account, ca, first_poll, backoff), credentials)
    }

    /// A floor with the account of `credentials` (JSON), as certkeeper loads its own.
    async fn resume(ca: &Ca, credentials: &str, first_poll: Duration, backoff: f32) -> Floor {
        let credentials = serde_json::from_str(credentials).expect("credentials");
        let account = Account::builder_with_http(Box::new(Self::client(ca)))
            .from_credentials(credentials)
            .await
            .expect("the floor's account");
        Self::with(account, ca, first_poll, backoff)
    }

    fn with(account: Account, ca: &Ca, first_poll: Duration, backoff: f32) -> Floor {
        Floor {
            account,
            policy: RetryPolicy::new()
                .initial_delay(first_poll)
                .backoff(backoff)
                .timeout(Duration::from_secs(30)),
            answers: Arc::default(),
            port: ca.http_port,
        }
    }

    fn client(
        ca: &Ca,
    ) -> hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        BodyWrapper<Bytes>,
    > {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ca.tls_root).expect("pebble's root") {
            roots.add(cert.expect("root")).expect("root");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https)
    }

    /// One certificate for NAMES; the responder is up only meanwhile (certkeeper's runs take
    /// the same port). Ok(wall time) or the CA's error.
    async fn issue(&self) -> Result<Duration, instant_acme::Error> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the floor's port-80 listener");
        let answers = self.answers.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(certkeeper::net::http_server::serve(
            listener,
            move |request: hyper::Request<hyper::body::Incoming>| {
                let token = request.uri().path().rsplit('/').next().unwrap_or_default();
                let answer = answers.lock().unwrap().get(token).cloned();
                async move {
                    match answer {
                        Some(answer) => hyper::Response::new(Full::new(Bytes::from(answer))),
                        None => certkeeper::net::http_server::text(
                            hyper::StatusCode::NOT_FOUND,
                            "text/plain",
                            "",
                        ),
                    }
                }
            },
            async {
                let _ = stopped.await;
            },
        ));
        let started = Instant::now();
        let result = self.order().await;
        let wall = started.elapsed();
        let _ = stop.send(());
        let _ = server.await;
        self.answers.lock().unwrap().clear();
        result.map(|()| wall)
    }

    async fn order(&self) -> Result<(), instant_acme::Error> {
        let identifiers: Vec<Identifier> = NAMES
            .iter()
            .map(|n| Identifier::Dns(n.to_string()))
            .collect();
        let mut order = self.account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            if authorization.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .expect("an http-01 challenge");
            self.answers.lock().unwrap().insert(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_string(),
            );
            challenge.set_ready().await?;
        }
        order.poll_ready(&self.policy).await?;
        order.finalize().await?;
        order.poll_certificate(&self.policy).await?;
        Ok(())
    }
}

/// One certkeeper binary's runs: its own directory and account.
struct Process {
    label: String,
    bin: String,
    ck: common::Certkeeper,
    walls: Vec<Duration>,
    cpus: Vec<Duration>,
}

impl Process {
    fn new(label: &str, bin: &str, pebble: &common::Pebble) -> Process {
        let ck = common::Certkeeper::new(pebble, &NAMES, "");
        let process = Process {
            label: label.to_string(),
            bin: bin.to_string(),
            ck,
            walls: Vec::new(),
            cpus: Vec::new(),
        };
        process.renew(&[]); // creates the account and the first certificate
        process
    }

    fn renew(&self, extra: &[&str]) {
        let output = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.ck.config)
            .arg("renew")
            .args(extra)
            .output()
            .expect("run certkeeper");
        assert!(
            output.status.success(),
            "{} renew failed: {}",
            self.label,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn once(&mut self) {
        let (wall, cpu) = (Instant::now(), children_cpu());
        self.renew(&["--force"]);
        self.walls.push(wall.elapsed());
        self.cpus.push(children_cpu().saturating_sub(cpu));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The floor as a whole process (see [`CHILD`]): one certificate, then exit; 1 when the CA
/// refused it (a bad nonce the one retry did not cover).
fn floor_process(spec: &str) -> std::process::ExitCode {
    let fields: Vec<&str> = spec.lines().collect();
    let [directory_url, tls_root, http_port, credentials] = fields[..] else {
        panic!("{CHILD}: four fields expected, got {spec:?}");
    };
    let ca = Ca {
        directory_url: directory_url.to_string(),
        tls_root: tls_root.to_string(),
        http_port: http_port.parse().expect("a port"),
    };
    let credentials = std::fs::read_to_string(credentials).expect("the credentials file");
    let issued = runtime().block_on(async {
        let floor = Floor::resume(&ca, &credentials, Duration::from_millis(1), 1.0).await;
        floor.issue().await
    });
    match issued {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// The whole-process floors run: wall time and CPU of each, and how many the CA refused.
struct FloorProcesses {
    spec: String,
    walls: Vec<Duration>,
    cpus: Vec<Duration>,
    failed: usize,
}

impl FloorProcesses {
    fn once(&mut self) {
        let (wall, cpu) = (Instant::now(), children_cpu());
        let status = Command::new(std::env::current_exe().expect("this benchmark's path"))
            .env(CHILD, &self.spec)
            .status()
            .expect("run the floor as a process");
        let (wall, cpu) = (wall.elapsed(), children_cpu().saturating_sub(cpu));
        match status.success() {
            true => {
                self.walls.push(wall);
                self.cpus.push(cpu);
            }
            false => self.failed += 1,
        }
    }
}

fn main() -> std::process::ExitCode {
    if let Ok(spec) = std::env::var(CHILD) {
        return floor_process(&spec);
    }
    let n = common::bench_n(1000);
    let pebble = common::Pebble::start(None);
    let ca = Ca::of(&pebble);
    let mut processes = vec![Process::new("certkeeper", common::BIN, &pebble)];
    if let Ok(before) = std::env::var("BEFORE_BIN") {
        processes.push(Process::new("before", &before, &pebble));
    }
    let runtime = runtime();
    let mut floors = [
        ("floor, 1 ms", Duration::from_millis(1), 1.0),
        ("floor, 10 ms", Duration::from_millis(10), 1.6),
    ]
    .map(|(label, first_poll, backoff)| {
        let (floor, _) = runtime.block_on(Floor::new(&ca, first_poll, backoff));
        let _ = runtime.block_on(floor.issue()); // the connection is warm from here on
        (label, floor, Vec::with_capacity(n), 0)
    });
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let credentials = scratch.path().join("floor-account.json");
    let (_, account) = runtime.block_on(Floor::new(&ca, Duration::from_millis(1), 1.0));
    std::fs::write(&credentials, account).expect("write the floor's credentials");
    let mut floor_processes = FloorProcesses {
        spec: format!(
            "{}\n{}\n{}\n{}",
            ca.directory_url,
            ca.tls_root,
            ca.http_port,
            credentials.display()
        ),
        walls: Vec::with_capacity(n),
        cpus: Vec::with_capacity(n),
        failed: 0,
    };
    for _ in 0..n {
        for (_, floor, walls, failed) in &mut floors {
            match runtime.block_on(floor.issue()) {
                Ok(wall) => walls.push(wall),
                // A bad nonce the client's one retry did not cover: not a floor sample.
                Err(_) => *failed += 1,
            }
        }
        floor_processes.once();
        for process in &mut processes {
            process.once();
        }
    }
    println!(
        "issuance against local pebble, {n} certificates of 2 names each, interleaved, existing accounts:"
    );
    let mut floor_median = Duration::ZERO;
    for (label, _, walls, failed) in &mut floors {
        walls.sort();
        let median = percentile(walls, 0.5);
        if floor_median.is_zero() {
            floor_median = median;
        }
        println!(
            "  {label:<14} median {:6.1} ms, p90 {:6.1} ms  (in-process, warm connection; {failed} orders lost to bad nonces)",
            ms(median),
            ms(percentile(walls, 0.9)),
        );
    }
    let FloorProcesses {
        mut walls,
        mut cpus,
        failed,
        ..
    } = floor_processes;
    walls.sort();
    cpus.sort();
    // Every process lost to bad nonces: no floor to compare with.
    let process_median = (!walls.is_empty()).then(|| percentile(&walls, 0.5));
    if let Some(process_median) = process_median {
        println!(
            "  {:<14} median {:6.1} ms, p90 {:6.1} ms, CPU median {:5.1} ms  (a process each: start, TLS, directory, 1 ms polls, exit; {failed} lost to bad nonces)",
            "floor, process",
            ms(process_median),
            ms(percentile(&walls, 0.9)),
            ms(percentile(&cpus, 0.5)),
        );
    }
    for process in &mut processes {
        process.walls.sort();
        process.cpus.sort();
        let median = percentile(&process.walls, 0.5);
        println!(
            "  {:<14} median {:6.1} ms, p90 {:6.1} ms, CPU median {:5.1} ms  = {:.2}x the 1 ms floor, {}",
            process.label,
            ms(median),
            ms(percentile(&process.walls, 0.9)),
            ms(percentile(&process.cpus, 0.5)),
            median.as_secs_f64() / floor_median.as_secs_f64(),
            process_median.map_or("no process floor".to_string(), |floor| format!(
                "{:.2}x the process floor",
                median.as_secs_f64() / floor.as_secs_f64()
            )),
        );
    }
    println!("  pebble saw {} orders", pebble.orders());
    std::process::ExitCode::SUCCESS
}
