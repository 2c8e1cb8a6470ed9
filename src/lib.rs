//! certkeeper: an ACME client daemon that keeps media-server TLS certificates valid.
//!
//! `cli` is the entry point; `daemon` wires the pieces together. Each other module owns one
//! concern, named in its own doc comment.
//!
//! # Layout
//!
//! One renewal, in the order it happens, and where each step lives:
//!
//! - when: `schedule` (pure: lifetime fraction, ARI window, jitter, backoff), `plan` (joined
//!   with what is on disk), `ratelimit` (the CA's limits, counted);
//! - the engine: `daemon` (the loop, control requests, one task per renewal: `daemon::task`),
//!   `renew` (one renewal: key, CSR, order, checks), `control` (the socket, and the typed
//!   outcome a client gets: `control::Renewal`);
//! - can the CA reach us: `preflight` (DNS, port 80 probe, other vantages, `preflight::remote`
//!   for probe servers), `dns`, `stun`, `tls_probe`;
//! - proving control: `challenge` (HTTP-01 listener, TLS-ALPN-01, DNS-01, the choice among
//!   them), `http_server` (the bounded server loop under it);
//! - talking to the CA: `acme` (every call into instant-acme), `web` (the one HTTPS client
//!   set-up), `keys`, `bundle` (what is checked before anything is deployed);
//! - putting it in place: `store` (versioned, atomic, no planted link followed), `deploy`,
//!   `reload`, `verify` (what the server really serves), `hook`, `notifications`;
//! - many nodes: `cluster` (etcd, lease, sealed keys, sync), plugged into `challenge` and
//!   `preflight` through their traits (`http01::SharedAnswers`, `http01::Route`,
//!   `preflight::Peers`): no module imports one that imports it back (`tests/modules.rs`);
//! - looking: `status`, `check`, `inspect`, `monitor`, `metrics`, `logging`, `sdnotify`;
//! - words and types shared by all: `config`, `names`, `state`, `timefmt`, `table`.

pub mod acme;
pub mod bundle;
pub mod challenge;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod daemon;
pub mod deploy;
pub mod dns;
pub mod hook;
pub mod http_server;
pub mod inspect;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod names;
pub mod notifications;
pub mod plan;
pub mod preflight;
pub mod ratelimit;
pub mod reload;
pub mod renew;
pub mod schedule;
pub mod sdnotify;
pub mod state;
pub mod status;
pub mod store;
pub mod stun;
pub mod table;
pub mod timefmt;
pub mod tls_probe;
pub mod verify;
pub mod web;
