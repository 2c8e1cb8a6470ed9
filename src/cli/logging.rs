//! Log output through `tracing`: human text (without our own timestamps under journald, which
//! adds its own) or JSON lines. `RUST_LOG` overrides the level.
//!
//! Under journald (stderr is `JOURNAL_STREAM`) each line starts with its syslog priority
//! (`<3>` for an error …), which journald reads as the entry's priority: `journalctl -p err`
//! then shows certkeeper's failures, not every line at "info".

use std::io::{IsTerminal, Write};

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match (format, stderr_is_journal()) {
        (LogFormat::Json, _) => builder.with_writer(std::io::stderr).json().try_init(),
        (LogFormat::Text, true) => builder
            .with_writer(JournalStderr)
            .with_ansi(false)
            .without_time()
            .try_init(),
        (LogFormat::Text, false) => builder
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .try_init(),
    };
}

/// Whether stderr is the journal's stream (`JOURNAL_STREAM=DEVICE:INODE`, set by systemd for
/// a unit whose output goes to the journal), not a terminal or a file it was redirected to.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(stderr.dev()) && inode.parse() == Ok(stderr.ino())
}

/// The syslog priority journald reads from a `<N>` line prefix.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// stderr for journald: each event's lines prefixed with its priority, written at once.
struct JournalStderr;

impl<'a> MakeWriter<'a> for JournalStderr {
    type Writer = PriorityLines<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        PriorityLines::new(std::io::stderr(), 6)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        PriorityLines::new(std::io::stderr(), priority(meta.level()))
    }
}

/// Collects one event and writes it when dropped, with `<N>` before every line.
struct PriorityLines<W: Write> {
    out: W,
    prefix: String,
    text: Vec<u8>,
}

impl<W: Write> PriorityLines<W> {
    fn new(out: W, priority: u8) -> Self {
        PriorityLines {
            out,
            prefix: format!("<{priority}>"),
            text: Vec::new(),
        }
    }
}

impl<W: Write> Write for PriorityLines<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for PriorityLines<W> {
    fn drop(&mut self) {
        let mut out = Vec::with_capacity(self.text.len() + 8);
        for line in self.text.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(line);
        }
        let _ = self.out.write_all(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_an_event_carries_its_priority() {
        let mut out = Vec::new();
        {
            let mut writer = PriorityLines::new(&mut out, priority(&Level::ERROR));
            write!(writer, "renewal failed name=media\n  caused by: refused\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<3>renewal failed name=media\n<3>  caused by: refused\n"
        );
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
    }
}
