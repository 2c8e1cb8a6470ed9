//! A real systemd (252, Debian 12) as PID 1 in a container, to drive the installed package as
//! an operator would: the root made once by `scripts/systemd-root` (cached outside the clone),
//! copied for each container, booted with `systemd-nspawn -b --private-network` (no network but
//! its own loopback), commands run with `nsenter` into the namespaces of its PID 1. Powered off
//! and removed on drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use super::program;

pub struct Container {
    /// The container's own copy of the root.
    pub root: PathBuf,
    name: String,
    nspawn: Option<Child>,
    /// The container's PID 1, as the host sees it.
    pid: i32,
    log: PathBuf,
}

/// The cached root; made by `scripts/systemd-root` when missing (a few minutes, once).
fn cached_root() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/systemd-root");
    let output = program("bash")
        .arg(script)
        .output()
        .expect("run scripts/systemd-root");
    assert!(
        output.status.success(),
        "scripts/systemd-root failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

impl Container {
    /// Boots a fresh copy of the cached root; waits (bounded) until systemd is up.
    pub fn boot(name: &str) -> Container {
        let cached = cached_root();
        let root = std::env::temp_dir().join(format!("certkeeper-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let copied = program("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&cached)
            .arg(&root)
            .status()
            .expect("cp");
        assert!(copied.success(), "cannot copy {}", cached.display());
        let log =
            std::env::temp_dir().join(format!("certkeeper-{name}-{}.log", std::process::id()));
        let mut container = Container {
            root,
            name: format!("ck-{name}-{}", std::process::id()),
            nspawn: None,
            pid: 0,
            log,
        };
        container.start();
        container
    }

    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).expect("container log");
        // --register=no --keep-unit: there is no host systemd to register with.
        let nspawn = program("systemd-nspawn")
            .args([
                "-b",
                "--private-network",
                "--register=no",
                "--keep-unit",
                "-q",
            ])
            .arg("-M")
            .arg(&self.name)
            .arg("-D")
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start systemd-nspawn");
        let nspawn_pid = nspawn.id();
        self.nspawn = Some(nspawn);
        let mut pid = None;
        super::wait_for(
            "the container's PID 1",
            Duration::from_secs(120),
            || {
                // By name: nspawn's first child sets the container up and exits once it has
                // forked PID 1, and a loaded machine lets pgrep see it first.
                pid = program("pgrep")
                    .args(["-x", "systemd", "-P", &nspawn_pid.to_string()])
                    .output()
                    .ok()
                    .and_then(|children| {
                        String::from_utf8_lossy(&children.stdout)
                            .lines()
                            .next()
                            .and_then(|l| l.trim().parse().ok())
                    });
                pid.is_some()
            },
            || self.log_text(),
        );
        self.pid = pid.unwrap_or_default();
        self.wait_until("systemd to finish booting", Duration::from_secs(120), |c| {
            let state = c.sh("systemctl is-system-running");
            matches!(
                String::from_utf8_lossy(&state.stdout).trim(),
                "running" | "degraded"
            )
        });
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `script` with `sh -c` inside the container, as root.
    pub fn sh(&self, script: &str) -> Output {
        program("nsenter")
            .args([
                "-t",
                &self.pid.to_string(),
                "-a",
                "--",
                "/bin/sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// Runs `script`, which must succeed; returns its stdout and stderr.
    pub fn ok(&self, script: &str) -> String {
        let output = self.sh(script);
        let text = text(&output);
        assert!(
            output.status.success(),
            "in the container: {script}\n{text}"
        );
        text
    }

    /// Writes `contents` to `path` inside the container (through its own file system view:
    /// an absolute link in the root is not followed on the host).
    pub fn write(&self, path: &str, contents: &[u8]) {
        let mut child = program("nsenter")
            .args(["-t", &self.pid.to_string(), "-a", "--", "/bin/sh", "-c"])
            .arg(format!(
                "mkdir -p \"$(dirname '{path}')\" && cat > '{path}'"
            ))
            .stdin(Stdio::piped())
            .spawn()
            .expect("nsenter");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(contents)
            .expect("write into the container");
        assert!(
            child.wait().expect("nsenter").success(),
            "cannot write {path}"
        );
    }

    /// Copies the host's file `from` to `to` inside the container.
    pub fn copy_in(&self, from: &Path, to: &str) {
        self.write(to, &std::fs::read(from).expect("read the host file"));
    }

    /// Polls `ready` every 200 ms until it holds, at most `limit`.
    pub fn wait_until(&self, what: &str, limit: Duration, mut ready: impl FnMut(&Self) -> bool) {
        super::wait_for(
            what,
            limit,
            || ready(self),
            || {
                format!(
                    "journal:\n{}",
                    text(&self.sh("journalctl --no-pager -n 60"))
                )
            },
        );
    }

    /// Powers the container off and boots it again from the same root: a reboot.
    pub fn reboot(&mut self) {
        self.power_off();
        self.start();
    }

    fn power_off(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        let _ = self.sh("systemctl poweroff --no-block");
        // Waited for on a thread, bounded by the channel: a container that does not power off
        // within 60 s is killed.
        let (done, finished) = std::sync::mpsc::channel();
        let pid = nspawn.id();
        let waiter = std::thread::spawn(move || {
            let _ = nspawn.wait();
            let _ = done.send(());
        });
        if finished.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = waiter.join();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.power_off();
        let _ = std::fs::remove_dir_all(&self.root);
        // The console log is kept when a test failed, for whoever looks into it.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
