//! The signals the daemon heeds: SIGTERM and SIGINT stop it, SIGHUP re-reads the config.

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::DaemonError;

pub(super) enum Event {
    Stop,
    Reload,
}

pub(super) struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub(super) fn new() -> Result<Self, DaemonError> {
        let make = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Self {
            term: make(SignalKind::terminate())?,
            int: make(SignalKind::interrupt())?,
            hup: make(SignalKind::hangup())?,
        })
    }

    pub(super) async fn next(&mut self) -> Event {
        tokio::select! {
            _ = self.term.recv() => Event::Stop,
            _ = self.int.recv() => Event::Stop,
            _ = self.hup.recv() => Event::Reload,
        }
    }

    pub(super) async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}
