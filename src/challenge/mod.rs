//! Ways of proving control of a name to the CA. Today: HTTP-01 from certkeeper's own listener.

pub mod http01;
