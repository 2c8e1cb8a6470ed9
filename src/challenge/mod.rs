//! Ways of proving control of a name to the CA: HTTP-01 from certkeeper's own listener, and
//! DNS-01 through RFC 2136 or an exec hook; `choice` decides which, per name.

pub mod choice;
pub mod dns01;
pub mod http01;
