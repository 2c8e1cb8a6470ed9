//! Ways of proving control of a name to the CA: HTTP-01 from certkeeper's own listener,
//! TLS-ALPN-01 from a short-lived responder on port 443, and DNS-01 through RFC 2136 or an
//! exec hook; `choice` decides which, per name.

pub(crate) mod choice;
pub(crate) mod dns01;
pub mod http01;
pub(crate) mod tls_alpn01;
