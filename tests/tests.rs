//! The integration suite, as one test binary: the harness (`common`) is compiled and linked
//! once, not once per file. Each module is one area, tested against real peers.

mod common;

mod account;
mod chains;
mod check;
mod cluster;
mod concurrent_reader;
mod config_errors;
mod control;
mod crash;
mod current_pebble;
mod daemon;
mod deploy;
mod deps;
mod dns01;
mod failover;
mod files;
mod hostile_ca;
mod http01;
mod inspect;
mod installed;
mod ip;
mod issuance;
mod listener_attack;
mod media_servers;
mod modules;
mod monitor;
mod nat;
mod operations;
mod preflight_order;
mod probe_server;
mod revoke;
mod scale;
mod scheduling;
mod simulation;
mod tls_alpn;
mod webroot;
