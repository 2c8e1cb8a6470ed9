//! The engine's decisions, apart from their effects (the split of ntpd-rs: one part decides,
//! the other does). Given the configuration, the time and what the world answers when asked
//! (a certificate's plan from disk, the CA's rate-limit ledger, the port-80 listener), the core
//! says what to do: start these renewals, answer these requests, warn of these expiries, fetch
//! these renewal windows, sleep this long. The loop in `mod.rs` does it and tells the core (its
//! `slots`) how it went. No clock of its own: its unit tests (`core/tests.rs`) drive it with
//! made-up times and a made-up world, through the rules of the schedule, the limits and the
//! requests.

use std::time::{Duration, SystemTime};

use super::expiry;
use super::slots::Slots;
use super::wiring::needs_http01_listener;
use crate::challenge::http01::ListenError;
use crate::config::{AcmeConfig, CertificateConfig, Config};
use crate::daemon::control::{Deferral, RenewalResult, Request};
use crate::renewal::plan::Plan;
use crate::renewal::ratelimit::{self, Deferred};
use crate::renewal::{self, Revocation};

/// Re-evaluate at least this often, so that a suspended machine or a clock jump is noticed.
pub(super) const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// How long the engine runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// `certkeeper run`: renews whatever is due, for ever, and answers the control socket.
    Service,
    /// A one-off command with no daemon running: does what it was asked, then ends.
    Once,
}

/// The renewal windows a one-off run looks at (fetching the stale ones) before it judges what
/// is due: those of the certificates its request may renew, so that a window the CA moved
/// decides the renewal and its `replaces`; none for a request that renews nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FirstLook {
    Every,
    Only(Vec<String>),
    Nothing,
}

impl FirstLook {
    pub(super) fn of(request: &Request) -> FirstLook {
        match request {
            Request::Renew {
                dry_run: false,
                names,
                ..
            } if names.is_empty() => FirstLook::Every,
            Request::Renew {
                dry_run: false,
                names,
                ..
            } => FirstLook::Only(names.clone()),
            Request::Revoke { name, .. } => FirstLook::Only(vec![name.clone()]),
            _ => FirstLook::Nothing,
        }
    }

    fn covers(&self, name: &str) -> bool {
        match self {
            FirstLook::Every => true,
            FirstLook::Only(names) => names.iter().any(|n| n == name),
            FirstLook::Nothing => false,
        }
    }
}

/// What the core asks of the world while it decides.
pub(super) trait World {
    /// The plan of `cert`, as the disk says now.
    fn plan(&mut self, cert: &CertificateConfig, now: SystemTime) -> Plan;
    /// Whether the rate limits of the CA `ca` let an order for `names` go out now (`renewal`:
    /// the same names as the current certificate). An admitted order is counted.
    fn admit(
        &mut self,
        ca: &str,
        names: &[String],
        renewal: bool,
        now: SystemTime,
    ) -> Result<(), Deferred>;
    /// Brings the port-80 listener up, if it is not yet (a one-off run binds it on first need).
    fn listen(&mut self) -> Result<(), ListenError>;
}

/// What the loop is to do after a pass over the certificates.
pub(super) enum Action {
    /// Start a renewal task (boxed: a certificate's config is large beside an answer).
    Start(Box<Start>),
    /// Tell the requests waiting for `name` how it ended, no order having run.
    Answer {
        name: String,
        dry_run: bool,
        result: RenewalResult,
    },
}

/// One renewal to start: which certificate, at which CA, and what rides on it (no `Debug`: a
/// revocation may carry a private key).
pub(super) struct Start {
    pub(super) cert: CertificateConfig,
    pub(super) ca: AcmeConfig,
    pub(super) dry_run: bool,
    /// Revoke the certificate this one replaces (`certkeeper revoke`).
    pub(super) revoke: Option<Revocation>,
}

/// A certificate close to expiry whose renewals keep failing: to log and notify.
pub(super) struct Warning<'c> {
    pub(super) cert: &'c CertificateConfig,
    pub(super) not_after: SystemTime,
    pub(super) message: String,
}

/// What a request to renew one certificate comes to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Asked {
    /// Queued: it starts as soon as its CA has room (and its limits allow).
    Queued,
    /// A live renewal of it runs already: the request waits for that one.
    Running,
    /// Not due until then, and not forced: nothing is queued.
    NotDue(SystemTime),
}

/// How a renewal task ended, as far as the core cares.
pub(super) enum Ending {
    /// Given up unfinished: the daemon stops, or this node lost the cluster's lease.
    Abandoned,
    /// Ran to its end: whether it renewed (issued and deployed), and whether its outcome was
    /// saved in the state file.
    Recorded { renewed: bool, saved: bool },
    /// The task failed unexpectedly (a bug).
    Crashed { error: String },
}

/// What the loop is to do once a renewal task ended.
#[derive(Debug, PartialEq)]
pub(super) struct Ended {
    /// A live renewal of the same names as the certificate it replaces: the CA's ledger counts
    /// it as a renewal, not as a new certificate.
    pub(super) renewal: bool,
    /// The answer for the requests waiting for it, when no order's outcome tells it.
    pub(super) answer: Option<RenewalResult>,
}

/// When the loop wakes up next.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Wake {
    /// The certificate due soonest among those not being renewed (its index), and when.
    pub(super) next: Option<(usize, SystemTime)>,
    /// Whether `next` is new since the last wake-up: worth a line in the log.
    pub(super) announce: bool,
    /// How long to sleep unless something else happens first.
    pub(super) sleep: Duration,
}

pub(super) struct Core {
    pub(super) mode: Mode,
    /// Each certificate's state: plan, hold, what runs, what was asked.
    pub(super) slots: Slots,
    /// The next renewal last announced in the log.
    announced: Option<(String, SystemTime)>,
    /// A one-off run's first look at renewal windows, until it has taken it (from then on it
    /// looks only at what it renewed).
    first_look: Option<FirstLook>,
}

impl Core {
    /// The core of `certkeeper run`.
    pub(super) fn service() -> Self {
        Core {
            mode: Mode::Service,
            slots: Slots::default(),
            announced: None,
            first_look: None,
        }
    }

    /// The core of a one-off run, which first looks at the renewal windows `first_look` names.
    pub(super) fn once(first_look: FirstLook) -> Self {
        Core {
            mode: Mode::Once,
            first_look: Some(first_look),
            ..Core::service()
        }
    }

    /// Whether the engine follows the schedule (a one-off run starts only what it is asked).
    fn scheduled(&self) -> bool {
        self.mode == Mode::Service
    }

    /// The plan of `cert`, kept or read afresh.
    fn plan_of(
        &mut self,
        cert: &CertificateConfig,
        now: SystemTime,
        world: &mut impl World,
    ) -> &Plan {
        self.slots.plan_or(&cert.name, || world.plan(cert, now))
    }

    /// The renewals to start now, and the requests to answer because theirs cannot start: the
    /// dry runs asked for (at the staging CA, outside the limits), then every certificate
    /// asked for or due, as long as its CA runs fewer than `acme.concurrency` and its rate
    /// limits allow. A cluster node without the lease (`leading` false) starts nothing.
    pub(super) fn starts(
        &mut self,
        config: &Config,
        leading: bool,
        now: SystemTime,
        world: &mut impl World,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if !leading {
            return actions;
        }
        self.dry_runs(config, world, &mut actions);
        for cert in &config.certificates {
            // Nothing more can start: the rest need not be looked at (this runs at every
            // wake-up, once per renewal that ends).
            if self.no_room(&config.acme) {
                break;
            }
            // A one-off run starts only what was asked, which needs no plan to know.
            if self.scheduled() {
                self.plan_of(cert, now, world);
            }
            if !self.slots.wants_start(&cert.name, self.scheduled(), now) {
                continue;
            }
            let plan = self.plan_of(cert, now, world);
            let (failures, leaf) = (plan.state.failures, plan.leaf.clone());
            let (names, renewal) = ratelimit::request_of(cert, leaf.as_ref());
            let ca = config.acme.ca_for(failures);
            if self.slots.running_at(&ca.directory) >= config.acme.concurrency {
                continue;
            }
            if needs_http01_listener(cert)
                && let Err(e) = world.listen()
            {
                self.slots.drop_request(&cert.name);
                actions.push(answer(&cert.name, false, failed(e)));
                continue;
            }
            if let Err(deferred) = world.admit(&ca.directory, &names, renewal, now) {
                tracing::warn!(name = %cert.name, ca = %ca.directory, "{}", deferred.reason);
                self.slots.hold(&cert.name, deferred.until);
                if self.slots.drop_request(&cert.name) {
                    let why = Deferral::RateLimited {
                        until: deferred.until,
                        reason: deferred.reason,
                    };
                    actions.push(answer(&cert.name, false, RenewalResult::Deferred(why)));
                }
                continue;
            }
            let revoke = self.slots.start(&cert.name, &ca.directory, renewal);
            actions.push(Action::Start(Box::new(Start {
                cert: cert.clone(),
                ca,
                dry_run: false,
                revoke,
            })));
        }
        actions
    }

    /// Whether every CA, the preferred and each fallback, already runs `acme.concurrency`
    /// renewals.
    fn no_room(&self, acme: &AcmeConfig) -> bool {
        std::iter::once(&acme.directory)
            .chain(acme.fallbacks.iter().map(|ca| &ca.directory))
            .all(|directory| self.slots.running_at(directory) >= acme.concurrency)
    }

    /// The dry runs asked for: against the staging CA, outside the rate-limit ledger and the
    /// schedule.
    fn dry_runs(&mut self, config: &Config, world: &mut impl World, actions: &mut Vec<Action>) {
        for name in self.slots.dry_runs_to_start() {
            let Some(cert) = config.certificate(&name) else {
                self.slots.drop_dry_run(&name);
                continue;
            };
            if needs_http01_listener(cert)
                && let Err(e) = world.listen()
            {
                self.slots.drop_dry_run(&name);
                actions.push(answer(&name, true, failed(e)));
                continue;
            }
            let mut ca = config.acme.clone();
            ca.directory = config.acme.staging_directory.clone();
            self.slots.start_dry_run(&name);
            actions.push(Action::Start(Box::new(Start {
                cert: cert.clone(),
                ca,
                dry_run: true,
                revoke: None,
            })));
        }
    }

    /// The certificates whose renewal window (ARI) is to be asked of the CA now: missing or
    /// due for a refresh, and wanted (a service keeps every one fresh; a one-off run takes its
    /// `FirstLook`, then looks at what it renewed). None on a cluster node without the lease.
    pub(super) fn ari_wanted<'c>(
        &mut self,
        config: &'c Config,
        leading: bool,
        now: SystemTime,
        world: &mut impl World,
    ) -> Vec<&'c CertificateConfig> {
        if !leading {
            return Vec::new();
        }
        let renewed = self.slots.take_renewed();
        let wanted: Vec<&'c CertificateConfig> = match (self.scheduled(), self.first_look.take()) {
            (true, _) => config.certificates.iter().collect(),
            (false, Some(first)) => (config.certificates.iter())
                .filter(|cert| first.covers(&cert.name))
                .collect(),
            (false, None) => (renewed.iter())
                .filter_map(|name| config.certificate(name))
                .collect(),
        };
        let mut due = Vec::new();
        for cert in wanted {
            if !self.slots.is_renewing(&cert.name)
                && renewal::ari_due(self.plan_of(cert, now, world), now)
            {
                due.push(cert);
            }
        }
        due
    }

    /// The expiry warnings to raise now: each certificate close to expiry whose renewals keep
    /// failing, at most hourly. A one-off run ends long before an hourly warning would matter.
    pub(super) fn expiry_warnings<'c>(
        &mut self,
        config: &'c Config,
        leading: bool,
        now: SystemTime,
        world: &mut impl World,
    ) -> Vec<Warning<'c>> {
        let mut warnings = Vec::new();
        if !self.scheduled() {
            return warnings;
        }
        for cert in &config.certificates {
            let plan = self.plan_of(cert, now, world);
            let Some((not_after, message)) = expiry::warning(plan, leading, now) else {
                continue;
            };
            if self.slots.warn_now(&cert.name, now) {
                warnings.push(Warning {
                    cert,
                    not_after,
                    message,
                });
            }
        }
        warnings
    }

    /// When to wake up: a service when the next certificate is due; at most an hour. Something
    /// due now (waiting for room at its CA) waits for a renewal to end, or the hour.
    pub(super) fn wake(
        &mut self,
        config: &Config,
        now: SystemTime,
        world: &mut impl World,
    ) -> Wake {
        let next = match self.mode {
            Mode::Service => self.next_due(config, now, world),
            Mode::Once => None,
        };
        let announce = next.is_some_and(|(index, at)| {
            let next = (config.certificates[index].name.clone(), at);
            at > now && self.announced.replace(next.clone()) != Some(next)
        });
        let sleep = next
            .and_then(|(_, at)| at.duration_since(now).ok())
            .filter(|wait| !wait.is_zero())
            .unwrap_or(LONGEST_SLEEP)
            .min(LONGEST_SLEEP);
        Wake {
            next,
            announce,
            sleep,
        }
    }

    /// The certificate due soonest, and when, among those not being renewed now.
    pub(super) fn next_due(
        &mut self,
        config: &Config,
        now: SystemTime,
        world: &mut impl World,
    ) -> Option<(usize, SystemTime)> {
        let mut soonest: Option<(usize, SystemTime)> = None;
        for (index, cert) in config.certificates.iter().enumerate() {
            if self.slots.is_renewing(&cert.name) {
                continue;
            }
            self.plan_of(cert, now, world);
            let at = self.slots.due_at(&cert.name, now).unwrap_or(now);
            if soonest.is_none_or(|(_, earliest)| at < earliest) {
                soonest = Some((index, at));
            }
        }
        soonest
    }

    /// A request to renew `cert` now: a dry run is always queued; a live renewal when it is due
    /// or `force`d, unless one runs already.
    pub(super) fn ask_renewal(
        &mut self,
        cert: &CertificateConfig,
        force: bool,
        dry_run: bool,
        now: SystemTime,
        world: &mut impl World,
    ) -> Asked {
        if dry_run {
            self.slots.queue_dry_run(&cert.name);
            return Asked::Queued;
        }
        if self.slots.is_renewing(&cert.name) {
            return Asked::Running;
        }
        let at = self.plan_of(cert, now, world).due.at(now);
        if !force && at > now {
            return Asked::NotDue(at);
        }
        self.slots.force(&cert.name);
        Asked::Queued
    }

    /// A request to replace `name` now and revoke the certificate it replaces; refused
    /// (`Asked::Running`) while a renewal of it runs, which would replace another one.
    pub(super) fn ask_revocation(&mut self, name: &str, revocation: Revocation) -> Asked {
        if self.slots.is_renewing(name) {
            return Asked::Running;
        }
        self.slots.force_revocation(name, revocation);
        Asked::Queued
    }

    /// A renewal task of `name` ended: its slot is freed (its plan read afresh), and held back
    /// for a while when its outcome could not be saved or the task crashed, lest the schedule
    /// say "due now" again at once.
    pub(super) fn ended(
        &mut self,
        name: &str,
        dry_run: bool,
        ending: Ending,
        now: SystemTime,
    ) -> Ended {
        let renewal = match (&ending, dry_run) {
            (_, true) => {
                self.slots.end_dry_run(name);
                false
            }
            (Ending::Crashed { .. }, false) => {
                self.slots.crashed(name, now);
                false
            }
            (_, false) => self.slots.end(name).unwrap_or(false),
        };
        let answer = match ending {
            Ending::Abandoned => Some(RenewalResult::Deferred(Deferral::Abandoned)),
            Ending::Recorded { renewed, saved } => {
                if !dry_run {
                    self.slots.recorded(name, saved, renewed, now);
                }
                None
            }
            Ending::Crashed { error } => Some(failed(format!(
                "the renewal task failed unexpectedly: {error}"
            ))),
        };
        Ended { renewal, answer }
    }

    /// A new configuration or lease: every plan is read afresh and the next renewal announced
    /// again.
    pub(super) fn forget(&mut self) {
        self.slots.forget_plans();
        self.announced = None;
    }
}

fn answer(name: &str, dry_run: bool, result: RenewalResult) -> Action {
    Action::Answer {
        name: name.to_string(),
        dry_run,
        result,
    }
}

/// A failure before an order, worded as the log words it.
pub(super) fn failed(error: impl ToString) -> RenewalResult {
    RenewalResult::Failed {
        error: error.to_string(),
        retry_not_before: None,
    }
}

#[cfg(test)]
mod tests;
