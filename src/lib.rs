//! certkeeper: an ACME client daemon that keeps media-server TLS certificates valid.
//!
//! `cli` is the entry point; `daemon` wires the pieces together. Each other module owns one
//! concern, named in its own doc comment.

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
