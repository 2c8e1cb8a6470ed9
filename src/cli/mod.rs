//! The command line: flags defined once, one file per subcommand's client side, errors mapped
//! to exit codes (78 for a bad config, as sysexits' EX_CONFIG, so systemd can stop restart
//! loops).
//!
//! `renew`, `check` and `status` go through the running daemon's control socket when one
//! answers, and run standalone otherwise; either way this side only asks and prints.

pub(crate) mod logging;
pub(crate) mod table;

mod check;
mod daemon_only;
mod inspect;
mod renew;
mod status;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{self, Config, LogFormat};
use crate::daemon;
use crate::daemon::control::Request;
use crate::daemon::control::client::{self, Daemon};

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
        /// Print each certificate's outcome as JSON (a list, at the end) instead of lines.
        #[arg(long)]
        json: bool,
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
    /// name; port 443 (TLS-ALPN-01) where the config names it. Exits with 0 when every method
    /// checked can succeed for every name, 1 when one cannot.
    Check {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Certificate names (default: all).
        names: Vec<String>,
    },
    /// Run by root from certkeeper-reload@UNIT.service: carry out the reload certkeeper asked
    /// for UNIT (see docs/servers/README.md). Needs no config.
    #[command(hide = true)]
    UnitAction { unit: String },
    /// Ask the running daemon to re-read its config file (as SIGHUP does); exits with 78 and
    /// the reason when the file is invalid (the daemon then keeps the previous one). The
    /// unit's ExecReload=, so that `systemctl reload certkeeper` reports a broken config.
    Reload,
    /// Revoke the current certificate of NAME (signed by the account key) and replace it at
    /// once: the new certificate is deployed first, then the old one is revoked.
    Revoke {
        /// The certificate's name in the config.
        name: String,
        /// Why (RFC 5280); keyCompromise also forbids reusing the key.
        #[arg(long, value_enum, default_value = "unspecified")]
        reason: crate::acme::RevokeReason,
        /// Sign the revocation with the certificate's own private key (PKCS#8 PEM) instead of
        /// the account key: when the account key is lost.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Serve probes for other hosts' pre-flight ([preflight] remote): fetch
    /// http://NAME:PORT/.well-known/acme-challenge/TOKEN from here, as the CA would, for
    /// clients that hold the shared secret. Needs no certkeeper config.
    ProbeServer {
        /// Where to listen, e.g. 0.0.0.0:8081 (put a TLS proxy in front for https://).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The shared secret (first line), the same as the clients' remote_token_file.
        #[arg(long)]
        token_file: PathBuf,
        /// The port probed: the CA's, 80.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// DNS servers ("IP:PORT") for the names; the system's by default.
        #[arg(long)]
        resolver: Vec<std::net::SocketAddr>,
    },
    /// The DNS-PERSIST-01 record each name of certificate NAME needs (challenge =
    /// "dns-persist-01"): set it once in the name's DNS zone, and it proves control for every
    /// later order of this account at the preferred CA. Registers the account if there is none.
    PersistRecord {
        /// The certificate's name in the config.
        name: String,
    },
    /// The ACME account at the preferred CA: show it, roll its key over, or deactivate it.
    Account {
        #[arg(value_enum)]
        action: crate::daemon::control::AccountAction,
        /// Confirms `deactivate`, which cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Examine any TLS endpoint (managed by certkeeper or not) and name what is wrong, with the
    /// fix: expiry, names (and their case), chain completeness and order, trust, key and
    /// certificate files. Exits 0 (ok), 1 (warning), 2 (failure) or 3 (unreachable). Needs no
    /// certkeeper config.
    Inspect {
        /// HOST or HOST:PORT (443 when not given).
        target: String,
        /// The name clients ask for, as they write it (default: HOST).
        #[arg(long)]
        name: Option<String>,
        /// Extra trusted roots (PEM), for a private or test CA.
        #[arg(long)]
        root: Option<PathBuf>,
        /// The certificate file the server is configured with (checked against --key and what
        /// it serves).
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The key file the server is configured with.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// An HTTP(S) URL whose `Date` tells the time (e.g. your CA's directory): tells this
        /// host's clock skew from a certificate that is really out of date.
        #[arg(long)]
        time_source: Option<String>,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
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

    /// The daemon's socket could not be reached: sysexits' EX_NOPERM when the user was refused
    /// (as when the daemon itself refuses one), else 1.
    fn reaching(e: client::ClientError) -> Self {
        Self {
            code: match e {
                client::ClientError::PermissionDenied(_) => 77,
                _ => 1,
            },
            message: e.to_string(),
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
    if let Command::Inspect {
        target,
        name,
        root,
        cert,
        key,
        time_source,
        json,
    } = &cli.command
    {
        let files = cert.clone().zip(key.clone());
        return inspect::run(
            target,
            name.as_deref(),
            root.clone(),
            files,
            time_source.as_deref(),
            *json,
        );
    }
    if let Command::ProbeServer {
        listen,
        token_file,
        port,
        resolver,
    } = &cli.command
    {
        logging::init(LogFormat::Text);
        let served = runtime().map_err(|e| e.to_string()).and_then(|runtime| {
            runtime
                .block_on(crate::preflight::remote::server::run(
                    *listen, token_file, *port, resolver,
                ))
                .map_err(|e| e.to_string())
        });
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("certkeeper: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Reload = cli.command {
        return daemon_only::reload(&cli.config);
    }
    if let Command::UnitAction { unit } = &cli.command {
        let dir = crate::deploy::reload::unit::trigger_dir();
        return match crate::deploy::reload::unit::carry_out(&dir, unit) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("certkeeper: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => return daemon_only::with_broken_config(&cli.config, &cli.command, &e),
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
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("certkeeper: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run => daemon::run(cli.config, config).await.map_err(Failure::new),
            Command::Renew {
                force,
                dry_run,
                json,
                names,
            } => {
                let request = Request::Renew {
                    force,
                    dry_run,
                    names,
                };
                renew::run(cli.config, config, request, json).await
            }
            Command::Account { action, yes } => {
                match action == crate::daemon::control::AccountAction::Deactivate && !yes {
                    true => Err(Failure {
                        code: 64,
                        message:
                            "deactivating the account cannot be undone (the CA refuses it from \
                                  then on, and a new account is registered at the next order); run \
                                  again with --yes to do it"
                                .into(),
                    }),
                    false => {
                        renew::run(cli.config, config, Request::Account { action }, false).await
                    }
                }
            }
            Command::Revoke { name, reason, key } => {
                let key_pem = key.as_deref().map(read_key).transpose()?;
                let request = Request::Revoke {
                    name,
                    reason,
                    key_pem,
                };
                renew::run(cli.config, config, request, false).await
            }
            Command::PersistRecord { name } => persist_record(&config, &name).await,
            Command::Status { json } => status::run(&config, json).await,
            Command::Check { json, names } => check::run(cli.config, config, json, names).await,
            Command::Completions { .. }
            | Command::Manpage
            | Command::ProbeServer { .. }
            | Command::Reload
            | Command::UnitAction { .. }
            | Command::Inspect { .. } => Ok(()),
        }
    });
    // A file operation stuck in a hung file system must not keep the process from exiting
    // (dropping the runtime would wait for it forever).
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("certkeeper: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// `revoke --key FILE`, read here with the caller's rights (a FIFO or device is refused, not
/// waited on); the daemon is sent the key, never the path.
fn read_key(path: &std::path::Path) -> Result<crate::daemon::control::KeyPem, Failure> {
    let bytes = crate::deploy::store::read_regular_file(path)
        .map_err(|e| Failure::new(format!("cannot read --key {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map(crate::daemon::control::KeyPem)
        .map_err(|_| {
            Failure::new(format!(
                "--key {} is not a PEM file (PKCS#8, \"-----BEGIN PRIVATE KEY-----\")",
                path.display()
            ))
        })
}

/// Prints the DNS-PERSIST-01 record of each name of certificate `name`, as zone-file lines.
async fn persist_record(config: &Config, name: &str) -> Result<(), Failure> {
    let cert = config
        .certificates
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| Failure {
            code: 64,
            message: format!("no certificate named {name:?} in the config"),
        })?;
    let store = crate::deploy::store::Store::new(&config.daemon.state_dir);
    let acme = crate::acme::AcmeClient::connect(&config.acme, &config.acme.directory, &store)
        .await
        .map_err(Failure::new)?;
    let records = acme
        .persist_records(&cert.domains)
        .await
        .map_err(Failure::new)?;
    for record in records {
        println!("{} IN TXT \"{}\"", record.fqdn, record.value);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime: {0}")]
struct RuntimeError(#[source] std::io::Error);

fn runtime() -> Result<tokio::runtime::Runtime, RuntimeError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RuntimeError)
}

/// Runs the engine once for `request` (no daemon answers), handing each answer to `take` as it
/// comes, as a daemon's would be; the exit code and message it ended with.
async fn run_once(
    config_path: std::path::PathBuf,
    config: Config,
    request: crate::daemon::control::Request,
    mut take: impl FnMut(crate::daemon::control::Reply),
) -> Result<(u8, Option<String>), Failure> {
    use crate::daemon::control::{Replies, Reply};
    let (replies, mut answers) = Replies::channel();
    let engine = crate::daemon::once(config_path, config, request, replies);
    let mut ended = (1, Some("the engine ended without an answer".to_string()));
    let taking = async {
        while let Some(reply) = answers.recv().await {
            if let Reply::Done { code, message } = reply {
                ended = (code, message);
                break;
            }
            take(reply);
        }
    };
    let (ran, ()) = tokio::join!(engine, taking);
    ran.map_err(Failure::new)?;
    Ok(ended)
}

/// The running daemon, when one answers on the configured control socket. Says in one line
/// (on stderr) which way the command goes.
async fn running_daemon(config: &Config) -> Result<Option<Daemon>, Failure> {
    let path = &config.daemon.control_socket;
    let daemon = client::connect(path).await.map_err(Failure::reaching)?;
    match &daemon {
        Some(_) => eprintln!(
            "certkeeper: through the running daemon ({})",
            path.display()
        ),
        None => eprintln!(
            "certkeeper: no daemon answers on {}: running standalone",
            path.display()
        ),
    }
    Ok(daemon)
}

/// Ends a command with the exit code and message of the daemon's (or the engine's) answer.
fn ended(code: u8, message: Option<String>) -> Result<(), Failure> {
    match code {
        0 => Ok(()),
        code => Err(Failure {
            code,
            message: message.unwrap_or_else(|| "failed".into()),
        }),
    }
}

/// Prints progress on stderr, when a person watches.
fn show_progress(done: usize, total: usize) {
    if std::io::stderr().is_terminal() {
        eprintln!("[{done}/{total}]");
    }
}
