//! What the daemon does with a request from the control socket (or from a one-off command run
//! standalone, which hands its request to the same loop): `renew` queues certificates for the
//! loop to start and is answered as each ends; `check` and `status` are answered at once.

use std::collections::HashSet;
use std::time::SystemTime;

use super::Daemon;
use super::core::{Asked, Mode};
use super::wiring::needs_http01_listener;
use crate::config::EX_CONFIG;
use crate::daemon::control::{
    AccountAction, Call, ChallengeUsed, Live, Renewal, RenewalResult, Replies, Reply, Request,
};
use crate::renewal::Outcome;
use crate::renewal::Revocation;
use crate::{daemon::check, daemon::status, timefmt};

/// A `renew` request still waiting for some of its certificates.
pub(super) struct Waiter {
    replies: Replies,
    /// (certificate name, dry run) not finished yet.
    pending: HashSet<(String, bool)>,
    total: usize,
    failed: usize,
}

impl Daemon {
    pub(super) fn answer_call(&mut self, call: Call, now: SystemTime) {
        let Call { request, replies } = call;
        match request {
            Request::Renew {
                force,
                dry_run,
                names,
            } => self.queue_renewals(force, dry_run, &names, replies, now),
            Request::Check { names } => self.check(&names, replies),
            Request::Revoke {
                name,
                reason,
                key_pem,
            } => self.queue_revocation(name, Revocation { reason, key_pem }, replies),
            Request::Account { action } => self.account(action, replies),
            Request::Reload => replies.send(match self.reload_config() {
                Ok(certificates) => {
                    replies.line(format!(
                        "configuration re-read: {certificates} certificate(s)"
                    ));
                    Reply::ok()
                }
                Err(e) => Reply::failed(
                    EX_CONFIG,
                    format!(
                        "the new configuration is invalid; the daemon keeps the previous one: {e}"
                    ),
                ),
            }),
            Request::Status => {
                let mut rows = status::rows(&self.config, now);
                for row in &mut rows {
                    row.renewing = self.core.slots.is_renewing(&row.name);
                }
                let live = Live {
                    pid: std::process::id(),
                    rows,
                    next_wakeup: self.next_wakeup.map(timefmt::utc),
                };
                replies.send(Reply::Status(live));
                replies.send(Reply::ok());
            }
        }
    }

    /// Queues `names` for renewal now: those due (every one with `force`), or a dry run of
    /// each. The answer ends once every queued one has ended.
    fn queue_renewals(
        &mut self,
        force: bool,
        dry_run: bool,
        names: &[String],
        replies: Replies,
        now: SystemTime,
    ) {
        // A renewal beside the lease holder would order twice and share nothing.
        if self.config.cluster.is_some() && !dry_run {
            replies.send(Reply::failed(
                EX_CONFIG,
                "this node is part of a cluster ([cluster] in the config): the node that holds the \
                 renewal lease renews for every node (see the daemon's log); `renew --dry-run` still \
                 tests the whole flow against the staging CA",
            ));
            return;
        }
        let certs = match self.config.selected(names) {
            Ok(certs) => certs,
            Err(why) => return replies.send(Reply::failed(EX_CONFIG, why)),
        };
        if dry_run {
            replies.line(format!(
                "dry run against {}: nothing is written to live paths and no reload runs",
                self.config.acme.staging_directory
            ));
        }
        let mut pending = HashSet::new();
        // Certificates with none installed that backoff keeps from being tried now: a script
        // must not read that as success.
        let mut held_back = 0;
        for cert in certs {
            let name = cert.name.clone();
            // A daemon repaired its outputs when it started; a one-off run does it now.
            if self.core.mode == Mode::Once
                && !dry_run
                && let Some(repair) = self.repair_output(&cert)
            {
                replies.line(format!("{name}: {repair}"));
            }
            match self.ask_renewal(&cert, force, dry_run, now) {
                Asked::Queued => {}
                Asked::Running => {
                    replies.line(format!("{name}: being renewed already; waiting for it"));
                }
                Asked::NotDue(at) => {
                    match self.store().current_version(&name) {
                        Some(_) => replies.line(format!(
                            "{name}: not due until {}; use --force to renew now",
                            timefmt::utc(at)
                        )),
                        None => {
                            held_back += 1;
                            replies.line(format!(
                                "{name}: has no certificate yet, and after a failed attempt the next \
                                 one is not before {} (see certkeeper status for why); use --force \
                                 to try now",
                                timefmt::utc(at)
                            ));
                        }
                    }
                    continue;
                }
            }
            pending.insert((name, dry_run));
        }
        if pending.is_empty() {
            return replies.send(match held_back {
                0 => Reply::ok(),
                n => Reply::failed(1, format!("{n} certificate(s) have none installed yet")),
            });
        }
        self.waiters.push(Waiter {
            replies,
            total: pending.len(),
            pending,
            failed: held_back,
        });
    }

    /// Queues the current certificate of `name` for replacement now, and for revocation once
    /// replaced.
    fn queue_revocation(&mut self, name: String, revocation: Revocation, replies: Replies) {
        if self.config.cluster.is_some() {
            return replies.send(Reply::failed(
                EX_CONFIG,
                "this node is part of a cluster: revoke from the node that holds the renewal lease (certkeeper status shows it)",
            ));
        }
        if let Err(why) = self.config.selected(std::slice::from_ref(&name)) {
            return replies.send(Reply::failed(EX_CONFIG, why));
        }
        if self.store().current_leaf_der(&name).is_none() {
            return replies.send(Reply::failed(
                1,
                format!("{name}: no certificate is installed: nothing to revoke"),
            ));
        }
        if self.core.ask_revocation(&name, revocation) == Asked::Running {
            return replies.send(Reply::failed(
                1,
                format!("{name}: being renewed now; revoke once that ends"),
            ));
        }
        self.waiters.push(Waiter {
            replies,
            pending: HashSet::from([(name, false)]),
            total: 1,
            failed: 0,
        });
    }

    /// Shows, rolls over or deactivates the account at the preferred CA, beside the renewals
    /// (which share the same account, so they use the new key at once).
    fn account(&self, action: AccountAction, replies: Replies) {
        let (accounts, store, acme) = (
            self.context.accounts.clone(),
            self.context.store.clone(),
            self.config.acme.clone(),
        );
        tokio::spawn(async move {
            let client = match accounts.get(&acme, &store).await {
                Ok(client) => client,
                Err(e) => return replies.send(Reply::failed(1, e)),
            };
            let done = match action {
                AccountAction::Show => Ok(()),
                AccountAction::Rollover => client.rollover().await.map(|()| {
                    replies.line("the account key was rolled over; the CA confirmed the new key");
                }),
                AccountAction::Deactivate => client.deactivate().await.map(|aside| {
                    replies.line(format!(
                        "the account is deactivated; its credentials are kept in {}; the next order registers a new account",
                        aside.display()
                    ));
                }),
            };
            if action == AccountAction::Deactivate && done.is_ok() {
                accounts.forget(&acme.directory).await;
            }
            match done {
                Ok(()) => {
                    replies.line(format!("account: {}", client.id()));
                    replies.line(format!("CA: {}", client.directory()));
                    if action != AccountAction::Deactivate {
                        replies.line(format!(
                            "key: {} ({})",
                            client.path().display(),
                            key_age(client.path())
                        ));
                    }
                    replies.send(Reply::ok());
                }
                Err(e) => replies.send(Reply::failed(1, e)),
            }
        });
    }

    /// Runs the pre-flight for `names` with the daemon's own listener serving the probe.
    fn check(&mut self, names: &[String], replies: Replies) {
        let certs = match self.config.selected(names) {
            Ok(certs) => certs,
            Err(why) => return replies.send(Reply::failed(EX_CONFIG, why)),
        };
        let Some(preflight) = self.context.preflight.clone() else {
            return replies.send(Reply::failed(
                1,
                "the pre-flight check is unavailable: its resolvers could not be set up (the log \
                 says why)",
            ));
        };
        let config = self.config.clone();
        let tls_alpn01 = self.context.tls_alpn01.clone();
        // A one-off run binds the listener now; the daemon bound it at start, if any
        // certificate needs it.
        let listening = match (self.core.mode, certs.iter().any(needs_http01_listener)) {
            (Mode::Once, true) => self.listener.ensure().map_err(check::NoListener::Bind),
            _ if self.listener.up => Ok(()),
            _ => Err(check::NoListener::WebrootsOnly),
        };
        let tokens = listening.map(|()| self.context.tokens.clone());
        self.checks.spawn(async move {
            let progress = |index, total, name: &str| {
                if total > 1 {
                    replies.line(format!("[{index}/{total}] checking {name}"));
                }
            };
            let findings = check::findings(
                &config,
                &certs,
                &preflight,
                tokens.as_ref(),
                &tls_alpn01,
                progress,
            )
            .await;
            replies.send(Reply::Findings(findings));
            replies.send(Reply::ok());
        });
    }

    /// Tells the requests waiting for this certificate how its renewal ended.
    pub(super) fn answer(&mut self, renewal: Renewal) {
        let key = (renewal.name.clone(), renewal.dry_run);
        for waiter in &mut self.waiters {
            if !waiter.pending.remove(&key) {
                continue;
            }
            if !renewal.succeeded() {
                waiter.failed += 1;
            }
            waiter.replies.send(Reply::Renewal(renewal.clone()));
            let done = waiter.total - waiter.pending.len();
            if waiter.total > 1 {
                waiter.replies.send(Reply::Progress {
                    done,
                    total: waiter.total,
                });
            }
            if waiter.pending.is_empty() {
                waiter.replies.send(match waiter.failed {
                    0 => Reply::ok(),
                    n => Reply::failed(1, format!("{n} certificate(s) could not be renewed")),
                });
            }
        }
        self.waiters.retain(|w| !w.pending.is_empty());
    }

    /// Tells the waiting requests how a renewal task ended.
    pub(super) fn answer_outcome(&mut self, outcome: &Outcome) {
        let result = match (&outcome.result, outcome.dry_run) {
            (Ok(issued), true) => RenewalResult::DryRunOk {
                names: issued.names.clone(),
                not_after: issued.not_after,
            },
            (Ok(issued), false) => RenewalResult::Renewed {
                not_after: issued.not_after,
                version: issued.version.clone(),
            },
            (Err(e), _) => RenewalResult::Failed {
                error: e.to_string(),
                retry_not_before: e.retry_not_before(),
            },
        };
        self.answer(Renewal {
            name: outcome.cert.name.clone(),
            dry_run: outcome.dry_run,
            challenge: outcome.choice.as_ref().map(|choice| ChallengeUsed {
                method: choice.summary().to_string(),
                reason: choice.reason.clone(),
            }),
            result,
            revocation: outcome.revoked.clone(),
        });
    }

    /// Whether a one-off run has answered everything it was asked.
    pub(super) fn idle(&self) -> bool {
        self.waiters.is_empty() && self.checks.is_empty() && self.core.slots.idle()
    }
}

/// How long ago the account key in `path` was written.
fn key_age(path: &std::path::Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .map_or("age unknown".into(), |age| {
            format!("written {} ago", timefmt::rough(age))
        })
}

/// A certificate's answer when no order ran (no challenge, no revocation).
pub(super) fn unordered(name: &str, dry_run: bool, result: RenewalResult) -> Renewal {
    Renewal {
        name: name.to_string(),
        dry_run,
        challenge: None,
        result,
        revocation: None,
    }
}
