//! certkeeper: an ACME client daemon that keeps media-server TLS certificates valid.
//!
//! `cli` is the entry point; `daemon` wires the pieces together. Each other module owns one
//! concern, named in its own doc comment.
//!
//! # Layout
//!
//! Twelve modules, each leaning only on those below it (`tests/modules.rs` fails when an
//! import circle comes back). One renewal, in the order it happens:
//!
//! - `cli`: the commands, their words and tables; `main.rs` only calls it;
//! - `daemon`: the engine — its decisions (`daemon::core`, pure: what to start, answer, warn
//!   of, fetch, and when to wake, with each certificate's `Slot` in `daemon::slots`), the loop
//!   that carries them out with one task per renewal, control requests (`daemon::control`: the
//!   socket and the typed outcome a client gets) — and what looks on: `check`, `status`,
//!   `inspect`, `monitor`, `metrics`, `notifications`, `sdnotify`;
//! - `renewal`: one renewal top to bottom, the task the engine starts (obtain — pre-flight,
//!   challenge choice, order, checks — then publish, deploy, revoke, one `Outcome`), and when
//!   it is due:
//!   `schedule` (pure: lifetime fraction, ARI window, jitter, backoff), `plan` (joined with
//!   what is on disk), `state`, `ratelimit` (the CA's limits, counted);
//! - `cluster`: many nodes (etcd, lease, sealed keys, sync), plugged into `challenge` and
//!   `preflight` through their traits (`http01::SharedAnswers`, `http01::Route`,
//!   `preflight::Peers`);
//! - `preflight`: can the CA reach us (DNS, the port-80 probe, other vantages, probe servers,
//!   STUN, TLS-ALPN-01, DNS-PERSIST-01 records);
//! - `acme`: talking to the CA (every call into instant-acme), keys and CSRs;
//! - `challenge`: proving control (HTTP-01 listener, TLS-ALPN-01, DNS-01, the choice among
//!   them);
//! - `deploy`: putting it in place (`store`: versioned, atomic, no planted link followed;
//!   `bundle`: what is checked before anything is deployed; `reload`, `verify`, `hook`);
//! - `net`: DNS lookups, the one HTTPS client set-up, the bounded server loop;
//! - `config`, `names`, `timefmt`: the words every module shares.

pub mod acme;
pub mod challenge;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod names;
pub mod net;
pub mod preflight;
pub mod renewal;
pub(crate) mod timefmt;
