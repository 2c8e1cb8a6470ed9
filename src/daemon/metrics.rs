//! Prometheus metrics, computed at each scrape from the same sources as `status` (the store
//! and the state files), so they can never disagree with it. Off unless `daemon.metrics_listen`
//! is set.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::{Method, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::deploy::store::Store;
use crate::net::http_server;
use crate::renewal::plan::plan;

type Labels = Vec<(String, String)>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Serves `/metrics` on `listener` until `shutdown`, always for the latest config.
pub async fn serve(
    listener: TcpListener,
    config: watch::Receiver<Arc<Config>>,
    shutdown: impl Future<Output = ()>,
) {
    STARTED.get_or_init(SystemTime::now);
    let respond = move |request: hyper::Request<hyper::body::Incoming>| {
        let response = if request.method() != Method::GET || request.uri().path() != "/metrics" {
            http_server::text(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n")
        } else {
            let body = render(&config.borrow(), SystemTime::now());
            http_server::text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            )
        };
        std::future::ready(response)
    };
    http_server::serve(listener, respond, shutdown).await
}

fn seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The metrics text for `config` at `now`.
pub fn render(config: &Config, now: SystemTime) -> String {
    let mut registry = Registry::with_prefix("certkeeper");
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Gauges::default();
        registry.register(name, help, family.clone());
        family
    };
    let not_after = gauge(
        &mut registry,
        "certificate_not_after_seconds",
        "End of validity of the current certificate (Unix time)",
    );
    let next = gauge(
        &mut registry,
        "certificate_next_renewal_seconds",
        "When the next renewal attempt is due (Unix time)",
    );
    let success = gauge(
        &mut registry,
        "certificate_last_success_seconds",
        "Last successful issuance (Unix time)",
    );
    let failures = gauge(
        &mut registry,
        "certificate_failures",
        "Failed attempts in a row",
    );
    let challenge = gauge(
        &mut registry,
        "certificate_challenge",
        "The challenge used for the certificate (1)",
    );

    let preflight = gauge(
        &mut registry,
        "preflight_ok",
        "Whether the pre-flight check before the last order found HTTP-01 reachable (1) or not (0), per name and address family",
    );

    let store = Store::new(&config.daemon.state_dir);
    let monitor_days = gauge(
        &mut registry,
        "monitor_days_left",
        "Days the certificate of a monitored endpoint ([[monitor]]) is still valid",
    );
    let monitor_severity = gauge(
        &mut registry,
        "monitor_severity",
        "The worst finding at a monitored endpoint: 0 ok, 1 warning, 2 failure",
    );
    for seen in crate::daemon::monitor::load(&store) {
        let labels = vec![
            ("endpoint".to_string(), seen.endpoint.clone()),
            ("name".to_string(), seen.name.clone()),
        ];
        if let Some(days) = seen.days_left {
            monitor_days.get_or_create(&labels).set(days as f64);
        }
        monitor_severity
            .get_or_create(&labels)
            .set(f64::from(seen.severity.level()));
    }
    let account_key = gauge(
        &mut registry,
        "account_key_written_seconds",
        "When the account key at the preferred CA was written: registered or rolled over (Unix time)",
    );
    let account = crate::acme::account_path(store.root(), &config.acme.directory);
    if let Ok(written) = std::fs::metadata(&account).and_then(|m| m.modified()) {
        account_key
            .get_or_create(&vec![("ca".to_string(), config.acme.directory.clone())])
            .set(seconds(written));
    }
    for cert in &config.certificates {
        let plan = plan(&store, cert, now);
        let labels = vec![("name".to_string(), cert.name.clone())];
        if let Some(leaf) = &plan.leaf {
            not_after
                .get_or_create(&labels)
                .set(seconds(leaf.not_after));
        }
        next.get_or_create(&labels).set(seconds(plan.due.at(now)));
        if let Some(at) = plan.state.last_success {
            success.get_or_create(&labels).set(seconds(at));
        }
        failures
            .get_or_create(&labels)
            .set(f64::from(plan.state.failures));
        let used = plan
            .state
            .challenge
            .clone()
            .unwrap_or_else(|| cert.challenge.to_string());
        let mut with_challenge = labels.clone();
        with_challenge.push(("challenge".into(), used));
        challenge.get_or_create(&with_challenge).set(1.0);
        for verdict in &plan.state.preflight {
            let labels = vec![
                ("certificate".to_string(), cert.name.clone()),
                ("name".to_string(), verdict.name.clone()),
                ("family".to_string(), verdict.family.clone()),
            ];
            preflight
                .get_or_create(&labels)
                .set(if verdict.ok { 1.0 } else { 0.0 });
        }
    }

    registry.register(
        "build",
        "certkeeper's version",
        Info::new(vec![(
            "version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]),
    );
    let process = gauge(
        &mut registry,
        "process_start_time_seconds",
        "When this process started (Unix time)",
    );
    process
        .get_or_create(&vec![])
        .set(seconds(*STARTED.get_or_init(SystemTime::now)));
    let memory = gauge(
        &mut registry,
        "process_resident_memory_bytes",
        "Resident memory of this process",
    );
    memory.get_or_create(&vec![]).set(resident_bytes() as f64);
    let cpu = gauge(
        &mut registry,
        "process_cpu_seconds",
        "CPU time used by this process",
    );
    cpu.get_or_create(&vec![]).set(cpu_seconds());

    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn cpu_seconds() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
        let (user, system) = (usage.user_time(), usage.system_time());
        (user.tv_sec() + system.tv_sec()) as f64 + (user.tv_usec() + system.tv_usec()) as f64 / 1e6
    })
}
