//! The network underneath: DNS lookups, the one HTTPS client set-up, and the bounded server
//! loop every listener runs on.

pub mod dns;
pub mod http_server;
pub(crate) mod web;
