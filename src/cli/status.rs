//! `certkeeper status`: the running daemon's live view (what it is renewing now, when it next
//! wakes up), or the state on disk when no daemon runs.

use std::time::SystemTime;

use super::{Failure, ended, running_daemon};
use crate::config::Config;
use crate::daemon::control::{Live, Reply, Request};
use crate::daemon::status::{self, Row};

pub(super) async fn run(config: &Config, json: bool) -> Result<(), Failure> {
    let (rows, live) = match running_daemon(config).await? {
        Some(daemon) => {
            let mut live: Option<Live> = None;
            let (code, message) = daemon
                .call(&Request::Status, |reply| {
                    if let Reply::Status(answer) = reply {
                        live = Some(answer);
                    }
                })
                .await
                .map_err(Failure::new)?;
            ended(code, message)?;
            let live = live.ok_or_else(|| Failure::new("the daemon sent no status"))?;
            (live.rows.clone(), Some(live))
        }
        None => (status::rows(config, SystemTime::now()), None),
    };
    print(config, &rows, live.as_ref(), json)?;
    if !json && let Some(line) = cluster_summary(config).await {
        println!("{line}");
    }
    if !json {
        let store = crate::deploy::store::Store::new(&config.daemon.state_dir);
        let account = crate::acme::account_path(store.root(), &config.acme.directory);
        if let Ok(written) = std::fs::metadata(&account).and_then(|m| m.modified()) {
            let age = SystemTime::now()
                .duration_since(written)
                .unwrap_or_default();
            println!(
                "account at {}: key written {} ago (registered or last rolled over)",
                config.acme.directory,
                crate::timefmt::rough(age)
            );
        }
        for seen in crate::daemon::monitor::load(&store) {
            let what = match &seen.certificate {
                Some(certificate) => format!("{certificate}: verify endpoint"),
                None => "monitor".to_string(),
            };
            println!(
                "{what} {} ({}), looked at {}: {} {}",
                seen.endpoint,
                seen.name,
                seen.at,
                seen.severity.mark(),
                seen.message
            );
        }
    }
    match rows.iter().filter(|r| r.alert.is_some()).count() {
        0 => Ok(()),
        n => Err(Failure {
            code: 2,
            message: format!("{n} certificate(s) need attention"),
        }),
    }
}

fn print(config: &Config, rows: &[Row], live: Option<&Live>, json: bool) -> Result<(), Failure> {
    if json {
        let text = serde_json::to_string_pretty(rows).map_err(Failure::new)?;
        println!("{text}");
        return Ok(());
    }
    if rows.is_empty() {
        println!("no certificates configured in {}", config.path.display());
    } else {
        print!("{}", table(rows));
    }
    if let Some(live) = live {
        let renewing: Vec<&str> = rows
            .iter()
            .filter(|r| r.renewing)
            .map(|r| r.name.as_str())
            .collect();
        let renewing = match renewing.is_empty() {
            true => "nothing".to_string(),
            false => renewing.join(", "),
        };
        println!(
            "daemon: pid {}, renewing {renewing} now; next wake-up {}",
            live.pid,
            live.next_wakeup.as_deref().unwrap_or("when a renewal ends")
        );
    }
    Ok(())
}

/// Cluster mode: this node, the lease holder and the state of etcd, in one line.
async fn cluster_summary(config: &Config) -> Option<String> {
    let (settings, configured, inspection) = crate::daemon::check::inspect_cluster(config).await?;
    Some(match inspection {
        Ok(found) => format!(
            "cluster: this node is {}; the renewal lease is held by {}; {} of {} certificates published in etcd; nodes probing for the pre-flight: {}",
            settings.node,
            found.leader.as_deref().unwrap_or("no node"),
            found.published,
            configured,
            found.probes_list(),
        ),
        Err(e) => format!("cluster: this node is {}; {e}", settings.node),
    })
}

/// Renders rows as an aligned text table.
pub(super) fn table(rows: &[Row]) -> String {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.domains.join(","),
                r.not_after.clone().unwrap_or_else(|| "-".into()),
                match r.days_left {
                    None => "-".into(),
                    Some(days) if days < 0 => "expired".into(),
                    Some(days) => days.to_string(),
                },
                match r.renewing {
                    true => "renewing now".into(),
                    false => r.next_renewal.clone(),
                },
                preflight_summary(&r.preflight),
                match &r.alert {
                    Some(alert) => format!("{alert}: {}", r.last_result),
                    None => r.last_result.clone(),
                },
            ]
        })
        .collect();
    crate::cli::table::render(
        [
            "NAME",
            "DOMAINS",
            "NOT AFTER",
            "DAYS LEFT",
            "NEXT RENEWAL",
            "PRE-FLIGHT",
            "LAST RESULT",
        ],
        &cells,
    )
}

/// The last pre-flight in a word or two: what failed, where.
fn preflight_summary(verdicts: &[crate::preflight::Verdict]) -> String {
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.ok)
        .map(|v| format!("{} ({})", v.name, v.family))
        .collect();
    match (verdicts.is_empty(), failed.is_empty()) {
        (true, _) => "-".into(),
        (false, true) => "ok".into(),
        (false, false) => format!("FAIL {}", failed.join(", ")),
    }
}
