//! Keeping under the CA's rate limits (`[acme.limits]`, Let's Encrypt's by default) from
//! certkeeper's own ledger of what it asked each CA for: new orders per 3 hours, certificates
//! per registered domain and per identical set of names per 7 days. A certificate that would
//! go over waits until the entry that counts against it ages out, instead of being refused
//! by the CA; so a thousand certificates due at once are spread over the hours the budget
//! allows. The ledger is a file per CA in the state directory, one JSON line per event: each
//! order adds a line (rewriting the whole ledger made a thousand orders O(n²) in bytes
//! synced), a restart keeps counting, and lines that aged out are compacted away.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{CertificateConfig, RateLimits};
use crate::deploy::bundle::LeafInfo;
use crate::deploy::store::{FileMode, SafeDir, Store, StoreError, directory_slug, write_atomic};
use crate::timefmt;

const ORDER_WINDOW: Duration = Duration::from_secs(3 * 3600);
const CERTIFICATE_WINDOW: Duration = Duration::from_secs(7 * 86400);

/// Why a certificate must wait, and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Deferred {
    pub until: SystemTime,
    pub reason: String,
}

/// What was ordered from one CA recently.
pub struct Ledger {
    path: PathBuf,
    entries: Entries,
    /// Lines in the file: compacted when most of them have aged out.
    lines: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Entries {
    /// Unix seconds of each new order.
    orders: Vec<u64>,
    issued: Vec<Issued>,
}

/// One line of the ledger.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Event {
    Order(u64),
    Issued(Issued),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Issued {
    at: u64,
    /// Sorted, lowercase.
    names: Vec<String>,
    /// Same set of names as the certificate it replaced.
    renewal: bool,
}

impl Ledger {
    /// The ledger of the CA at `directory`; empty when there is none yet. Unreadable lines
    /// (a write cut short by a crash) are skipped: they only ever make certkeeper wait less
    /// than it might. A ledger of the earlier format (one JSON document) is carried over.
    pub fn load(store: &Store, directory: &str) -> Ledger {
        let (dir, slug) = (store.root().join("ratelimits"), directory_slug(directory));
        let path = dir.join(format!("{slug}.jsonl"));
        let mut ledger = Ledger {
            entries: Entries::default(),
            lines: 0,
            path,
        };
        let text = std::fs::read(&ledger.path).unwrap_or_default();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            ledger.lines += 1;
            match serde_json::from_slice(line) {
                Ok(Event::Order(at)) => ledger.entries.orders.push(at),
                Ok(Event::Issued(issued)) => ledger.entries.issued.push(issued),
                Err(e) => {
                    tracing::warn!(path = %ledger.path.display(), error = %e, "skipping an unreadable line of the rate-limit ledger")
                }
            }
        }
        let legacy = dir.join(format!("{slug}.json"));
        if let Ok(bytes) = std::fs::read(&legacy) {
            if let Ok(old) = serde_json::from_slice::<Entries>(&bytes) {
                ledger.entries.orders.extend(old.orders);
                ledger.entries.issued.extend(old.issued);
            }
            if ledger.compact().is_ok() {
                let _ = std::fs::remove_file(&legacy);
            }
        }
        ledger
    }

    /// Whether an order for `names` may go out at `now`; `renewal`: the names are those of
    /// the current certificate (renewals do not count against the registered domain).
    pub fn admit(
        &mut self,
        names: &[String],
        renewal: bool,
        limits: &RateLimits,
        now: SystemTime,
    ) -> Result<(), Deferred> {
        self.prune(now);
        let names = normalized(names);
        let mut waits = Vec::new();
        if let Some(until) = wait_for(&self.entries.orders, limits.orders_per_3h, ORDER_WINDOW) {
            waits.push(Deferred {
                until,
                reason: format!(
                    "{} new orders in 3 hours (acme.limits.orders_per_3h)",
                    limits.orders_per_3h
                ),
            });
        }
        let same: Vec<u64> = self.issued_where(|i| i.names == names);
        if let Some(until) = wait_for(&same, limits.duplicates_per_week, CERTIFICATE_WINDOW) {
            waits.push(Deferred {
                until,
                reason: format!(
                    "{} certificates for the same names in 7 days (acme.limits.duplicates_per_week)",
                    limits.duplicates_per_week
                ),
            });
        }
        if !renewal {
            for domain in registered_domains(&names) {
                let new_ones = self
                    .issued_where(|i| !i.renewal && registered_domains(&i.names).contains(&domain));
                let limit = limits.certificates_per_domain_per_week;
                if let Some(until) = wait_for(&new_ones, limit, CERTIFICATE_WINDOW) {
                    waits.push(Deferred {
                        until,
                        reason: format!(
                            "{limit} new certificates for {domain} in 7 days (acme.limits.certificates_per_domain_per_week)"
                        ),
                    });
                }
            }
        }
        match waits.into_iter().max_by_key(|d| d.until) {
            None => Ok(()),
            Some(d) => Err(Deferred {
                reason: format!(
                    "the CA's rate limit of {} is spent; waiting until {}",
                    d.reason,
                    timefmt::utc(d.until)
                ),
                until: d.until,
            }),
        }
    }

    pub fn record_order(&mut self, now: SystemTime) -> Result<(), StoreError> {
        self.entries.orders.push(seconds(now));
        self.append(&Event::Order(seconds(now)))
    }

    pub fn record_issued(
        &mut self,
        names: &[String],
        renewal: bool,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let issued = Issued {
            at: seconds(now),
            names: normalized(names),
            renewal,
        };
        self.entries.issued.push(issued.clone());
        self.append(&Event::Issued(issued))
    }

    fn issued_where(&self, keep: impl Fn(&Issued) -> bool) -> Vec<u64> {
        self.entries
            .issued
            .iter()
            .filter(|i| keep(i))
            .map(|i| i.at)
            .collect()
    }

    fn prune(&mut self, now: SystemTime) {
        let now = seconds(now);
        let (orders, certificates) = (ORDER_WINDOW.as_secs(), CERTIFICATE_WINDOW.as_secs());
        self.entries.orders.retain(|at| at + orders > now);
        self.entries.issued.retain(|i| i.at + certificates > now);
    }

    /// Adds `event` as a line, synced; compacts first when most lines have aged out.
    fn append(&mut self, event: &Event) -> Result<(), StoreError> {
        let live = self.entries.orders.len() + self.entries.issued.len();
        if self.lines > 2 * live + 64 {
            // The event is already among the entries: the compacted file holds it.
            return self.compact();
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("ledger");
        crate::deploy::store::create_dir(dir)?;
        SafeDir::open(dir, false)?.append(name, &line_of(event), FileMode::PRIVATE)?;
        self.lines += 1;
        Ok(())
    }

    /// Rewrites the ledger with the entries still counting, atomically.
    fn compact(&mut self) -> Result<(), StoreError> {
        if let Some(dir) = self.path.parent() {
            crate::deploy::store::create_dir(dir)?;
        }
        let orders = self.entries.orders.iter().map(|at| Event::Order(*at));
        let issued = self.entries.issued.iter().cloned().map(Event::Issued);
        let text: Vec<u8> = orders.chain(issued).flat_map(|e| line_of(&e)).collect();
        write_atomic(&self.path, &text, FileMode::PRIVATE)?;
        self.lines = self.entries.orders.len() + self.entries.issued.len();
        Ok(())
    }
}

/// With `times` (unix seconds, any order) counting against a `limit` per `window`: `None` when
/// one more fits now (or the limit is 0: not kept), else when it will.
fn wait_for(times: &[u64], limit: u32, window: Duration) -> Option<SystemTime> {
    let limit = limit as usize;
    if limit == 0 || times.len() < limit {
        return None;
    }
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    // Once this one has aged out, `limit - 1` remain and one more fits.
    let freeing = sorted[sorted.len() - limit];
    Some(UNIX_EPOCH + Duration::from_secs(freeing) + window)
}

/// The names `cert` asks for, and whether ordering them is a renewal: the current certificate
/// covers exactly the same set (renewals do not count against the registered domain).
pub fn request_of(cert: &CertificateConfig, current: Option<&LeafInfo>) -> (Vec<String>, bool) {
    let names: Vec<String> = cert
        .domains
        .iter()
        .map(|d| d.as_str().to_string())
        .collect();
    let renewal = current.is_some_and(|leaf| normalized(&leaf.names) == normalized(&names));
    (names, renewal)
}

fn normalized(names: &[String]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    names
}

/// `media.example.co.uk` → `example.co.uk`, by the public suffix list.
fn registered_domains(names: &[String]) -> Vec<String> {
    let mut domains: Vec<String> = names
        .iter()
        .map(|n| {
            let name = n.trim_start_matches("*.");
            psl::domain_str(name).unwrap_or(name).to_string()
        })
        .collect();
    domains.sort();
    domains.dedup();
    domains
}

fn line_of(event: &Event) -> Vec<u8> {
    // Serializing plain numbers and strings cannot fail.
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    line
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::load(&Store::new(dir.path()), "https://ca.test/dir");
        (dir, ledger)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    const LIMITS: RateLimits = RateLimits {
        orders_per_3h: 3,
        certificates_per_domain_per_week: 2,
        duplicates_per_week: 2,
    };

    #[test]
    fn orders_wait_until_the_oldest_of_the_window_ages_out() {
        let (_dir, mut ledger) = ledger();
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for minute in 0..3 {
            let at = start + Duration::from_secs(60 * minute);
            ledger
                .admit(&names(&["a.example.com"]), true, &LIMITS, at)
                .unwrap();
            ledger.record_order(at).unwrap();
        }
        let refused = ledger
            .admit(
                &names(&["b.example.com"]),
                true,
                &LIMITS,
                start + Duration::from_secs(600),
            )
            .unwrap_err();
        assert_eq!(refused.until, start + ORDER_WINDOW);
        assert!(
            refused.reason.contains("orders_per_3h"),
            "{}",
            refused.reason
        );
        assert!(
            ledger
                .admit(
                    &names(&["b.example.com"]),
                    true,
                    &LIMITS,
                    start + ORDER_WINDOW
                )
                .is_ok()
        );
    }

    #[test]
    fn new_certificates_count_per_registered_domain_renewals_do_not() {
        let (dir, mut ledger) = ledger();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        ledger
            .record_issued(&names(&["a.example.co.uk"]), false, now)
            .unwrap();
        ledger
            .record_issued(&names(&["b.example.co.uk"]), false, now)
            .unwrap();
        let refused = ledger
            .admit(&names(&["c.example.co.uk"]), false, &LIMITS, now)
            .unwrap_err();
        assert!(
            refused.reason.contains("example.co.uk"),
            "{}",
            refused.reason
        );
        assert_eq!(refused.until, now + CERTIFICATE_WINDOW);
        assert!(
            ledger
                .admit(&names(&["c.example.co.uk"]), true, &LIMITS, now)
                .is_ok(),
            "a renewal"
        );
        assert!(
            ledger
                .admit(&names(&["c.other.co.uk"]), false, &LIMITS, now)
                .is_ok(),
            "another domain"
        );
        // The ledger survives a restart.
        let mut reloaded = Ledger::load(&Store::new(dir.path()), "https://ca.test/dir");
        assert!(
            reloaded
                .admit(&names(&["c.example.co.uk"]), false, &LIMITS, now)
                .is_err()
        );
    }

    #[test]
    fn duplicates_count_the_same_set_of_names_in_any_order_and_case() {
        let (_dir, mut ledger) = ledger();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        ledger
            .record_issued(&names(&["b.example.com", "a.example.com"]), true, now)
            .unwrap();
        ledger
            .record_issued(&names(&["A.example.com", "b.example.com"]), true, now)
            .unwrap();
        let refused = ledger
            .admit(
                &names(&["a.example.com", "b.example.com"]),
                true,
                &LIMITS,
                now,
            )
            .unwrap_err();
        assert!(refused.reason.contains("same names"), "{}", refused.reason);
        assert!(
            ledger
                .admit(&names(&["a.example.com"]), true, &LIMITS, now)
                .is_ok()
        );
    }

    #[test]
    fn the_ledger_survives_a_restart_a_torn_line_and_the_old_format_and_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let ca = "https://ca.test/dir";
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut ledger = Ledger::load(&store, ca);
        ledger.record_order(now).unwrap();
        ledger
            .record_issued(&names(&["a.example.com"]), true, now)
            .unwrap();
        // A crash in the middle of a line: the line is skipped, the rest still counts.
        let path = ledger.path.clone();
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"{\"order\":18000");
        std::fs::write(&path, &text).unwrap();
        let again = Ledger::load(&store, ca);
        assert_eq!(
            (again.entries.orders.len(), again.entries.issued.len()),
            (1, 1)
        );

        // A ledger of the earlier format is read and carried over into the new one.
        std::fs::remove_file(&path).unwrap();
        let legacy = path.with_file_name(format!("{}.json", directory_slug(ca)));
        std::fs::write(
            &legacy,
            br#"{"orders":[1800000000,1800000001],"issued":[]}"#,
        )
        .unwrap();
        let mut carried = Ledger::load(&store, ca);
        assert_eq!(carried.entries.orders.len(), 2);
        assert!(!legacy.exists(), "the old file is gone once carried over");
        assert_eq!(Ledger::load(&store, ca).entries.orders.len(), 2);

        // Lines that aged out are compacted away as new ones come.
        let week_later = now + Duration::from_secs(8 * 86400);
        for _ in 0..100 {
            carried.record_order(now).unwrap();
        }
        carried.prune(week_later);
        for _ in 0..3 {
            carried.record_order(week_later).unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 3, "{lines} lines after compaction");
        assert_eq!(Ledger::load(&store, ca).entries.orders.len(), 3);
    }
}
