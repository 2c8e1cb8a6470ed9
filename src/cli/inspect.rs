//! `certkeeper inspect`: prints what `crate::daemon::inspect` found at an endpoint, and exits as a
//! monitoring check does (0 ok, 1 warning, 2 failure, 3 unreachable).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::daemon::inspect::{self, Target};

pub(super) fn run(
    target: &str,
    name: Option<&str>,
    root: Option<PathBuf>,
    files: Option<(PathBuf, PathBuf)>,
    time_source: Option<&str>,
    json: bool,
) -> ExitCode {
    let clock = match time_source {
        None => None,
        Some(url) => {
            let offset = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(crate::net::web::TimeSourceError::Runtime)
                .and_then(|runtime| {
                    runtime.block_on(crate::net::web::clock_offset(url, root.as_deref()))
                });
            match offset {
                Ok(offset) => Some((url, offset)),
                Err(e) => {
                    eprintln!("certkeeper: the time source cannot be read: {e}");
                    None
                }
            }
        }
    };
    let host = target
        .rsplit_once(':')
        .filter(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok() && !target.ends_with(']')
        })
        .map_or(target, |(host, _)| host);
    let address = match host == target {
        true => format!("{target}:443"),
        false => target.to_string(),
    };
    let name = name.unwrap_or(host.trim_start_matches('[').trim_end_matches(']'));
    let target = Target {
        address: &address,
        name,
        roots: root.as_deref(),
        files: files
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path())),
        clock,
    };
    let report = match inspect::inspect(&target, SystemTime::now()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("certkeeper: {e}");
            return ExitCode::from(3);
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("certkeeper: {e}"),
        }
    } else {
        println!("{} (name {}):", report.endpoint, report.name);
        for finding in &report.findings {
            println!("  {:<4} {}", finding.severity.mark(), finding.message);
        }
    }
    ExitCode::from(report.exit_code())
}
