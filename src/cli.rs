//! The command line: flags defined once, one function per subcommand, errors mapped to exit
//! codes (78 for a bad config, as sysexits' EX_CONFIG, so systemd can stop restart loops).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{CommandFactory, Parser, Subcommand};

use crate::acme::{AcmeClient, Solvers};
use crate::challenge::dns01::Dns01;
use crate::challenge::http01::{self, Tokens};
use crate::cluster::{Cluster, ClusterError, Inspection};
use crate::config::{self, AcmeConfig, CertificateConfig, ClusterConfig, Config, LogFormat};
use crate::deploy::deploy;
use crate::notifications::{Event, Notifier, NotifyEventName};
use crate::plan::plan;
use crate::preflight::{Check, Finding, Preflight, Severity};
use crate::ratelimit::{self, Ledger};
use crate::renew::{self, RenewError};
use crate::state::CertState;
use crate::store::Store;
use crate::{daemon, logging, status, timefmt};

const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "certkeeper",
    version,
    about = "Keeps TLS certificates of media servers valid (ACME)"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, env = "CERTKEEPER_CONFIG", default_value = config::DEFAULT_PATH, global = true)]
    config: PathBuf,
    /// Log format (overrides daemon.log_format).
    #[arg(long, value_enum, global = true)]
    log_format: Option<CliLogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: obtain missing certificates and renew each when due.
    Run,
    /// Renew now what is due (or everything with --force), then exit.
    Renew {
        /// Renew even certificates that are not due.
        #[arg(long)]
        force: bool,
        /// Run the whole flow against acme.staging_directory; write nothing to live paths and
        /// run no reload.
        #[arg(long)]
        dry_run: bool,
        /// Certificate names (default: all).
        names: Vec<String>,
    },
    /// Show each certificate: names, expiry, next renewal, last result. Exits with 2 when a
    /// certificate has expired or is close to expiry while its renewals fail.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pre-flight: DNS, addresses, port 80 reachability (a real probe) and clock, for every
    /// name. Exits with 0 when HTTP-01 can succeed for every name, 1 when it cannot.
    Check {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Certificate names (default: all).
        names: Vec<String>,
    },
    /// Print shell completions for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Manpage,
}

/// A failure that ends a command, with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(message: impl ToString) -> Self {
        Self {
            code: 1,
            message: message.to_string(),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Generated from the CLI definition itself; they need no config.
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "certkeeper",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Manpage => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("certkeeper: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    // One crypto provider for the whole process (rustls needs it set before any TLS use).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("certkeeper: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let format = match cli.log_format {
        Some(CliLogFormat::Json) => LogFormat::Json,
        Some(CliLogFormat::Text) => LogFormat::Text,
        None => config.daemon.log_format,
    };
    logging::init(format);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("certkeeper: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run => daemon::run(cli.config, config).await.map_err(Failure::new),
            Command::Renew {
                force,
                dry_run,
                names,
            } => renew_now(&config, force, dry_run, &names).await,
            Command::Status { json } => show_status(&config, json).await,
            Command::Check { json, names } => check(&config, json, &names).await,
            Command::Completions { .. } | Command::Manpage => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("certkeeper: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn selected<'a>(
    config: &'a Config,
    names: &[String],
) -> Result<Vec<&'a CertificateConfig>, Failure> {
    if names.is_empty() {
        return Ok(config.certificates.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            config.certificate(name).ok_or_else(|| {
                let known: Vec<&str> = config
                    .certificates
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                Failure {
                    code: EX_CONFIG,
                    message: format!(
                        "no certificate named \"{name}\" in {}; configured: {}",
                        config.path.display(),
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                }
            })
        })
        .collect()
}

async fn renew_now(
    config: &Config,
    force: bool,
    dry_run: bool,
    names: &[String],
) -> Result<(), Failure> {
    // A one-off renewal beside the lease holder would order twice and share nothing.
    if config.cluster.is_some() && !dry_run {
        return Err(Failure {
            code: EX_CONFIG,
            message: "this node is part of a cluster ([cluster] in the config): the node that \
                      holds the renewal lease renews for every node (see the daemon's log); \
                      `renew --dry-run` still tests the whole flow against the staging CA"
                .into(),
        });
    }
    let store = Store::new(&config.daemon.state_dir);
    let now = SystemTime::now();
    let mut due = Vec::new();
    for cert in selected(config, names)? {
        if !dry_run {
            match store.repair_outputs(&cert.name, &cert.output) {
                Ok(0) => {}
                Ok(n) => println!(
                    "{}: repaired {n} output file(s) left out of date by an interrupted run",
                    cert.name
                ),
                Err(e) => println!("{}: cannot repair output files: {e}", cert.name),
            }
        }
        let at = plan(&store, cert, now).due.at(now);
        if force || dry_run || at <= now {
            due.push(cert);
        } else {
            println!(
                "{}: not due until {}; use --force to renew now",
                cert.name,
                timefmt::utc(at)
            );
        }
    }
    if due.is_empty() {
        return Ok(());
    }
    if dry_run {
        println!(
            "dry run against {}: nothing is written to live paths and no reload runs",
            config.acme.staging_directory
        );
    }
    let tokens = Tokens::default();
    let server = match due.iter().any(|c| c.webroot.is_none()) {
        true => {
            let listener = http01::bind(config.daemon.listen).map_err(Failure::new)?;
            Some(tokio::spawn(http01::serve(
                listener,
                tokens.clone(),
                std::future::pending(),
            )))
        }
        false => None,
    };

    let dns01 = match config.dns01.clone() {
        Some(dns01) => Some(Dns01::new(dns01).map_err(Failure::new)?),
        None => None,
    };
    let preflight = Preflight::new(config)
        .inspect_err(|e| tracing::warn!(error = %e, "the pre-flight check is unavailable"))
        .ok();
    let solvers = Solvers {
        tokens: &tokens,
        dns01: dns01.as_ref(),
        webroot: None,
    };
    let total = due.len();
    let progress = std::io::stderr().is_terminal() && total > 1;
    let mut one_off = OneOff {
        config,
        store,
        solvers,
        preflight,
        notifier: Notifier::new(config.notify.clone()),
        dry_run,
        clients: Vec::new(),
        ledgers: HashMap::new(),
    };
    let mut failed = 0;
    for (index, cert) in due.into_iter().enumerate() {
        if progress {
            eprintln!("[{}/{total}] {}", index + 1, cert.name);
        }
        if !one_off.renew(cert).await {
            failed += 1;
        }
    }
    if let Some(server) = server {
        server.abort();
    }
    one_off.notifier.flush(Duration::from_secs(30)).await;
    match failed {
        0 => Ok(()),
        n => Err(Failure::new(format!(
            "{n} certificate(s) could not be renewed"
        ))),
    }
}

/// What a one-off `renew` shares across its certificates.
struct OneOff<'a> {
    config: &'a Config,
    store: Store,
    solvers: Solvers<'a>,
    preflight: Option<Preflight>,
    notifier: Notifier,
    dry_run: bool,
    /// One client per CA directory, connected on first use.
    clients: Vec<AcmeClient>,
    /// The rate-limit ledger of each CA directory, loaded on first use.
    ledgers: HashMap<String, Ledger>,
}

impl OneOff<'_> {
    /// Renews one certificate and says what happened; false when it failed.
    async fn renew(&mut self, cert: &CertificateConfig) -> bool {
        // The staging CA for a dry run; else the preferred CA, or the next one after
        // repeated failures.
        let (ca, directory) = match self.dry_run {
            true => (
                self.config.acme.clone(),
                self.config.acme.staging_directory.clone(),
            ),
            false => {
                let ca = self
                    .config
                    .acme
                    .ca_for(CertState::load(&self.store, &cert.name).failures);
                let directory = ca.directory.clone();
                (ca, directory)
            }
        };
        let names = match self.dry_run {
            true => None,
            false => match self.admit(cert, &directory) {
                Ok(names) => Some(names),
                Err(reason) => {
                    println!(
                        "{}: NOT RENEWED: {reason}; raise [acme.limits] if the CA allows more",
                        cert.name
                    );
                    return false;
                }
            },
        };
        let acme = match client(&mut self.clients, &ca, &directory, &self.store).await {
            Ok(acme) => acme.clone(),
            Err(e) => {
                println!("{}: FAILED: {e}", cert.name);
                if !self.dry_run {
                    let error = RenewError::from(e);
                    let _ =
                        renew::record(&self.store, &cert.name, None, Some(&directory), Err(&error));
                }
                return false;
            }
        };
        let attempt = renew::obtain(
            &acme,
            self.solvers,
            self.preflight.as_ref(),
            &self.store,
            cert,
        )
        .await;
        if let Some(choice) = &attempt.choice {
            println!("{}: {} ({})", cert.name, choice.summary(), choice.reason);
        }
        let result = match attempt.result {
            Ok(obtained) if self.dry_run => {
                println!(
                    "{}: dry run ok: the CA issued a certificate for {} valid until {}; it passed every check",
                    cert.name,
                    obtained.leaf.names.join(", "),
                    timefmt::utc(obtained.leaf.not_after)
                );
                return true;
            }
            Ok(obtained) => {
                if let Some((names, renewal)) = &names {
                    self.record_issued(&directory, names, *renewal);
                }
                deploy(&self.store, cert, &obtained.bundle)
                    .await
                    .map(|installed| (installed.dir, obtained.leaf.not_after))
                    .map_err(RenewError::from)
            }
            Err(e) => Err(e),
        };
        if !self.dry_run {
            // A state file that cannot be written is logged by `record`; the result stands.
            let _ = renew::record(
                &self.store,
                &cert.name,
                attempt.choice.as_ref(),
                attempt.ca.as_deref(),
                result.as_ref().map(|_| ()),
            );
        }
        match result {
            Ok((version, not_after)) => {
                println!(
                    "{}: renewed, valid until {} ({})",
                    cert.name,
                    timefmt::utc(not_after),
                    version.display()
                );
                let message = format!("new certificate valid until {}", timefmt::utc(not_after));
                self.notifier
                    .send(Event::new(cert, NotifyEventName::Success, message, None));
                if let Err(e) =
                    renew::refresh_ari(&acme, &self.store, cert, SystemTime::now()).await
                {
                    tracing::warn!(name = %cert.name, error = %e, "could not fetch the renewal window");
                }
                true
            }
            Err(e) => {
                println!("{}: FAILED: {e}", cert.name);
                if !self.dry_run {
                    self.notifier.send(Event::new(
                        cert,
                        NotifyEventName::Failure,
                        e.to_string(),
                        None,
                    ));
                }
                false
            }
        }
    }
}

impl OneOff<'_> {
    /// Counts an order for `cert` at `directory` against the CA's rate limits; the names and
    /// whether it is a renewal, or why it must wait.
    fn admit(
        &mut self,
        cert: &CertificateConfig,
        directory: &str,
    ) -> Result<(Vec<String>, bool), String> {
        let now = SystemTime::now();
        let current = self.store.current(&cert.name).ok().flatten();
        let (names, renewal) = ratelimit::request_of(cert, current.as_ref().map(|c| &c.leaf));
        let limits = self.config.acme.limits_for(directory);
        let ledger = self.ledger(directory);
        ledger
            .admit(&names, renewal, &limits, now)
            .map_err(|deferred| deferred.reason)?;
        if let Err(e) = ledger.record_order(now) {
            tracing::warn!(error = %e, "cannot save the rate-limit ledger");
        }
        Ok((names, renewal))
    }

    fn record_issued(&mut self, directory: &str, names: &[String], renewal: bool) {
        if let Err(e) = self
            .ledger(directory)
            .record_issued(names, renewal, SystemTime::now())
        {
            tracing::warn!(error = %e, "cannot save the rate-limit ledger");
        }
    }

    fn ledger(&mut self, directory: &str) -> &mut Ledger {
        self.ledgers
            .entry(directory.to_string())
            .or_insert_with(|| Ledger::load(&self.store, directory))
    }
}

/// The client for `directory`, connecting on first use.
async fn client<'c>(
    clients: &'c mut Vec<AcmeClient>,
    ca: &AcmeConfig,
    directory: &str,
    store: &Store,
) -> Result<&'c mut AcmeClient, crate::acme::AcmeError> {
    let index = match clients.iter().position(|c| c.directory() == directory) {
        Some(index) => index,
        None => {
            clients.push(AcmeClient::connect(ca, directory, store).await?);
            clients.len() - 1
        }
    };
    Ok(&mut clients[index])
}

async fn show_status(config: &Config, json: bool) -> Result<(), Failure> {
    let rows = status::rows(config, SystemTime::now());
    let alerts = rows.iter().filter(|r| r.alert.is_some()).count();
    if json {
        let text = serde_json::to_string_pretty(&rows).map_err(Failure::new)?;
        println!("{text}");
    } else if rows.is_empty() {
        println!("no certificates configured in {}", config.path.display());
    } else {
        print!("{}", status::table(&rows));
    }
    if !json && let Some(line) = cluster_summary(config).await {
        println!("{line}");
    }
    match alerts {
        0 => Ok(()),
        n => Err(Failure {
            code: 2,
            message: format!("{n} certificate(s) need attention"),
        }),
    }
}

/// Cluster mode: who holds the lease, and what etcd holds that this node can use.
async fn inspect_cluster(
    config: &Config,
) -> Option<(&ClusterConfig, usize, Result<Inspection, ClusterError>)> {
    let settings = config.cluster.as_ref()?;
    let names: Vec<&str> = config
        .certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let inspection = match Cluster::new(settings) {
        Ok(cluster) => cluster.inspect(&names).await,
        Err(e) => Err(e),
    };
    Some((settings, names.len(), inspection))
}

/// Cluster mode: this node, the lease holder and the state of etcd, in one line.
async fn cluster_summary(config: &Config) -> Option<String> {
    let (settings, configured, inspection) = inspect_cluster(config).await?;
    Some(match inspection {
        Ok(found) => format!(
            "cluster: this node is {}; the renewal lease is held by {}; {} of {configured} certificates published in etcd",
            settings.node,
            found.leader.as_deref().unwrap_or("no node"),
            found.published,
        ),
        Err(e) => format!("cluster: this node is {}; {e}", settings.node),
    })
}

/// Cluster mode: whether etcd answers, and whether this node's secret opens what is there.
async fn cluster_findings(config: &Config) -> Vec<Finding> {
    let Some((settings, configured, inspection)) = inspect_cluster(config).await else {
        return Vec::new();
    };
    let finding = |name: Option<String>, severity, message: String| Finding {
        name,
        address: None,
        check: Check::Cluster,
        severity,
        message,
    };
    let found = match inspection {
        Ok(found) => found,
        Err(e) => {
            return vec![finding(
                None,
                Severity::Fail,
                format!(
                    "{e}; this node renews nothing and installs nothing from the cluster until etcd answers"
                ),
            )];
        }
    };
    let mut findings = vec![finding(
        None,
        Severity::Ok,
        format!(
            "etcd answers; this node is {}, the renewal lease is held by {}; {} of {configured} certificates published",
            settings.node,
            found.leader.as_deref().unwrap_or("no node yet"),
            found.published,
        ),
    )];
    for (name, why) in found.unusable {
        findings.push(finding(Some(name), Severity::Fail, why));
    }
    findings
}

async fn check(config: &Config, json: bool, names: &[String]) -> Result<(), Failure> {
    let certs = selected(config, names)?;
    let preflight = Preflight::new(config).map_err(Failure::new)?;
    let tokens = Tokens::default();
    let mut findings = Vec::new();
    let needs_listener = certs.iter().any(|c| c.webroot.is_none());
    let listener = match http01::bind(config.daemon.listen) {
        Ok(listener) => Some(listener),
        Err(_) if !needs_listener => None,
        Err(e) => {
            findings.push(Finding {
                name: None,
                address: None,
                check: Check::Port,
                severity: Severity::Fail,
                message: format!(
                    "{e}; the reachability probe needs certkeeper's listener, so it was skipped"
                ),
            });
            None
        }
    };
    let server =
        listener.map(|l| tokio::spawn(http01::serve(l, tokens.clone(), std::future::pending())));
    let names: Vec<&str> = certs
        .iter()
        .flat_map(|c| c.domains.iter())
        .filter(|d| !d.is_wildcard())
        .map(|d| d.as_str())
        .collect();
    let progress = std::io::stderr().is_terminal() && names.len() > 1;
    for (index, name) in names.iter().enumerate() {
        let webroot = certs
            .iter()
            .find(|c| c.domains.iter().any(|d| d.as_str() == *name))
            .and_then(|c| c.webroot.as_deref());
        // Without a webroot, the probe is served by our listener: no listener, no probe.
        if webroot.is_none() && server.is_none() {
            continue;
        }
        if progress {
            eprintln!("[{}/{}] checking {name}", index + 1, names.len());
        }
        findings.extend(preflight.check_name(name, &tokens, webroot).await);
    }
    match crate::acme::clock_offset(&config.acme, &config.acme.directory).await {
        Ok(offset) => findings.push(crate::preflight::clock_finding(offset)),
        Err(e) => findings.push(Finding {
            name: None,
            address: None,
            check: Check::Clock,
            severity: Severity::Warn,
            message: e.to_string(),
        }),
    }
    if let Some(server) = server {
        server.abort();
    }
    findings.extend(cluster_findings(config).await);
    let http01_ok = !findings
        .iter()
        .any(|f| f.severity == Severity::Fail && !matches!(f.check, Check::Clock | Check::Cluster));
    if json {
        let report = serde_json::json!({ "http01_ok": http01_ok, "findings": findings });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(Failure::new)?
        );
    } else {
        let rows: Vec<[String; 5]> = findings
            .iter()
            .map(|f| {
                let result = match f.severity {
                    Severity::Ok => "ok",
                    Severity::Warn => "WARN",
                    Severity::Fail => "FAIL",
                };
                [
                    result.to_string(),
                    f.name.clone().unwrap_or_else(|| "-".into()),
                    f.address.map_or("-".into(), |a| a.to_string()),
                    format!("{:?}", f.check).to_lowercase(),
                    f.message.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            crate::table::render(["RESULT", "NAME", "ADDRESS", "CHECK", "FINDING"], &rows)
        );
        println!(
            "{}",
            if http01_ok {
                "http-01 can succeed for every name"
            } else {
                "http-01 cannot succeed for every name: fix the FAIL lines, or configure [dns01] (challenge = \"auto\" then uses dns-01)"
            }
        );
    }
    if http01_ok {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            message: "pre-flight check failed".into(),
        })
    }
}
