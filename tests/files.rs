//! Files under hostile or broken conditions: a full disk, an output directory any user may
//! write to, a symbolic link planted at an output path. Each gives a clear error (or is
//! defused) and leaves the previous certificate in place.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{Certkeeper, Pebble, key_matches, require_root};

/// A small tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let status = common::program("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs failed");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = common::program("umount").arg(&self.0).status();
    }
}

/// A certificate issued into a state directory on its own tmpfs of `size`; the version path.
fn issued_on_tmpfs(pebble: &Pebble, size: &str) -> (Certkeeper, Tmpfs, std::path::PathBuf) {
    let ck = Certkeeper::new(pebble, &["media.example.com"], "");
    let disk = Tmpfs::mount(&ck.path("state"), size);
    ck.ok(&["renew"]);
    let before = ck.current_dir();
    (ck, disk, before)
}

/// `current` still points at `before`, and its certificate and key still match.
fn assert_previous_stays(ck: &Certkeeper, before: &std::path::Path) {
    assert_eq!(
        ck.current_dir(),
        before,
        "current still points at the previous version"
    );
    let chain = fs::read(before.join("fullchain.pem")).unwrap();
    assert!(key_matches(
        &chain,
        &fs::read(before.join("privkey.pem")).unwrap()
    ));
}

#[test]
fn a_full_disk_is_named_and_the_previous_certificate_stays() {
    if !require_root(
        "a_full_disk_is_named_and_the_previous_certificate_stays",
        "it mounts a small tmpfs",
    ) {
        return;
    }
    let pebble = Pebble::start(None);
    let (ck, _disk, before) = issued_on_tmpfs(&pebble, "1m");

    // Fill the disk (bounded: at most 2 MiB in 4 KiB writes).
    let filler = ck.path("state/filler");
    let mut file = fs::File::create(&filler).unwrap();
    for _ in 0..512 {
        if std::io::Write::write_all(&mut file, &[0u8; 4096]).is_err() {
            break;
        }
    }
    drop(file);

    let orders = pebble.orders();
    let output = ck.run(&["renew", "--force"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(stdout.contains("the disk is full"), "{stdout}");
    // Seen before ordering: no certificate is issued only to be thrown away.
    assert!(stdout.contains("nothing was ordered"), "{stdout}");
    assert_eq!(pebble.orders(), orders, "an order onto a full disk");
    assert_previous_stays(&ck, &before);

    // Space again: the next attempt succeeds and leaves no partial version behind.
    fs::remove_file(&filler).unwrap();
    ck.ok(&["renew", "--force"]);
    assert_ne!(ck.current_dir(), before);
    let partial = fs::read_dir(ck.path("state/certs/media/versions"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(partial, 0, "no leftover of the failed install");
}

#[test]
fn a_read_only_file_system_is_named_and_the_previous_certificate_stays() {
    if !require_root(
        "a_read_only_file_system_is_named_and_the_previous_certificate_stays",
        "it mounts a tmpfs read-only",
    ) {
        return;
    }
    let pebble = Pebble::start(None);
    let (ck, _disk, before) = issued_on_tmpfs(&pebble, "4m");
    let remount = common::program("mount")
        .args(["-o", "remount,ro"])
        .arg(ck.path("state"))
        .status()
        .expect("mount");
    assert!(remount.success());
    let output = ck.run(&["renew", "--force"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("read-only") && stdout.contains("nothing was ordered"),
        "{stdout}"
    );
    assert_previous_stays(&ck, &before);
}

#[test]
fn an_output_directory_any_user_may_write_is_refused() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let open_dir = ck.path("shared");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
    let text = fs::read_to_string(&ck.config).unwrap() + "key = \"shared/privkey.pem\"\n";
    fs::write(&ck.config, text).unwrap();
    let output = ck.run(&["renew"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(
        stdout.contains("refusing to write certificates into") && stdout.contains("chmod o-w"),
        "{stdout}"
    );
    assert!(!open_dir.join("privkey.pem").exists());
}

#[test]
fn a_symlink_planted_at_an_output_path_is_replaced_not_followed() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let victim = ck.path("victim.txt");
    fs::write(&victim, "do not overwrite").unwrap();
    fs::create_dir(ck.path("single")).unwrap();
    std::os::unix::fs::symlink(&victim, ck.path("single/privkey.pem")).unwrap();
    let text = fs::read_to_string(&ck.config).unwrap() + "key = \"single/privkey.pem\"\n";
    fs::write(&ck.config, text).unwrap();
    ck.ok(&["renew"]);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "do not overwrite");
    let meta = fs::symlink_metadata(ck.path("single/privkey.pem")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link is replaced by the key file itself"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

/// Lets the user nobody reach pebble's files and the test directory.
fn open_to_nobody(pebble: &Pebble, ck: &Certkeeper) {
    for dir in [pebble.dir.path(), ck.dir.path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Runs certkeeper with `args` as the user nobody (uid and gid 65534, no other groups).
fn as_nobody(ck: &Certkeeper, args: &[&str]) -> std::process::Output {
    common::program("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(common::BIN)
        .arg("--config")
        .arg(&ck.config)
        .args(args)
        .output()
        .expect("setpriv")
}

#[test]
fn permission_denied_is_named_and_the_previous_certificate_stays() {
    if !require_root(
        "permission_denied_is_named_and_the_previous_certificate_stays",
        "it runs certkeeper as the unprivileged user nobody",
    ) {
        return;
    }
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    fs::create_dir(ck.path("single")).unwrap();
    let text = fs::read_to_string(&ck.config).unwrap() + "key = \"single/privkey.pem\"\n";
    fs::write(&ck.config, text).unwrap();
    ck.ok(&["renew"]);
    let before = ck.current_dir();
    let key_before = fs::read(ck.path("single/privkey.pem")).unwrap();

    // Everything belongs to nobody now, except the directory of the single key file.
    open_to_nobody(&pebble, &ck);
    let chown = common::program("chown")
        .args(["-R", "65534:65534"])
        .arg(ck.dir.path())
        .status()
        .expect("chown");
    assert!(chown.success());
    std::os::unix::fs::chown(ck.path("single"), Some(0), Some(0)).unwrap();

    let orders = pebble.orders();
    let output = as_nobody(&ck, &["renew", "--force"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("permission denied") && stdout.contains("single"),
        "the error names the problem and the path:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("nothing was ordered"), "{stdout}");
    assert_eq!(
        pebble.orders(),
        orders,
        "no order spent on a renewal that cannot land"
    );
    assert_previous_stays(&ck, &before);
    assert_eq!(fs::read(ck.path("single/privkey.pem")).unwrap(), key_before);
}

#[test]
fn a_link_planted_above_the_output_files_is_refused() {
    if !require_root(
        "a_link_planted_above_the_output_files_is_refused",
        "it hands a directory to the user nobody, as a media server's home is its user's",
    ) {
        return;
    }
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    // The media server's home, its user's to write; another service's root-only directory.
    let home = ck.path("home");
    fs::create_dir(&home).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    nix::unistd::chown(&home, Some(nobody.uid), None).unwrap();
    let root_only = ck.path("root-only");
    fs::create_dir(&root_only).unwrap();
    fs::set_permissions(&root_only, fs::Permissions::from_mode(0o700)).unwrap();
    // That user swaps its tls directory for a link to the root-only one.
    std::os::unix::fs::symlink(&root_only, home.join("tls")).unwrap();
    let text = fs::read_to_string(&ck.config).unwrap() + "key = \"home/tls/privkey.pem\"\n";
    fs::write(&ck.config, text).unwrap();
    let output = ck.run(&["renew"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("is a link in") && said.contains("home"),
        "{said}"
    );
    assert_eq!(
        fs::read_dir(&root_only).unwrap().count(),
        0,
        "nothing written there"
    );
}

/// Runs `ck` with `args`, bounded: a command that hangs fails the test instead of the suite.
fn run_bounded(ck: &Certkeeper, args: &[&str]) -> std::process::Output {
    let child = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&ck.config)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output();
        let _ = done.send(());
        output
    });
    if finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .is_err()
    {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("certkeeper {args:?} still runs after 60 s");
    }
    waiter.join().unwrap().unwrap()
}

#[test]
fn fifos_planted_among_the_outputs_are_never_opened() {
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let text = fs::read_to_string(&ck.config).unwrap() + "key = \"single/privkey.pem\"\n";
    fs::write(&ck.config, text).unwrap();
    ck.ok(&["renew"]);
    // A FIFO where the key file was (read at start to repair outputs), and one at the name the
    // writability check once created and removed: opening either would block forever.
    let key = ck.path("single/privkey.pem");
    fs::remove_file(&key).unwrap();
    let fifo_mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
    nix::unistd::mkfifo(&key, fifo_mode).unwrap();
    nix::unistd::mkfifo(&ck.path("single/.certkeeper-writable.tmp"), fifo_mode).unwrap();
    let output = run_bounded(&ck, &["renew", "--force"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta = fs::symlink_metadata(&key).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the FIFO is replaced by the key"
    );
    assert!(key_matches(
        &fs::read(ck.current_dir().join("cert.pem")).unwrap(),
        &fs::read(&key).unwrap()
    ));
    // revoke --key with a FIFO: refused at once, not waited on.
    let fifo = ck.path("key.fifo");
    nix::unistd::mkfifo(&fifo, fifo_mode).unwrap();
    let output = run_bounded(&ck, &["revoke", "media", "--key", fifo.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("not a regular file"), "{said}");
}

#[test]
fn a_renewal_run_by_root_leaves_the_service_users_state_to_it() {
    use std::os::unix::fs::MetadataExt;
    if !require_root(
        "a_renewal_run_by_root_leaves_the_service_users_state_to_it",
        "it hands the state directory to the user nobody, as the unit's is certkeeper's",
    ) {
        return;
    }
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    // The service's layout: a state directory its user owns, outputs inside it.
    let text = fs::read_to_string(&ck.config)
        .unwrap()
        .replace("dir = \"out\"", "dir = \"state/out\"");
    fs::write(&ck.config, text).unwrap();
    open_to_nobody(&pebble, &ck);
    fs::create_dir(ck.path("state")).unwrap();
    std::os::unix::fs::chown(ck.path("state"), Some(65534), Some(65534)).unwrap();

    // Root renews while the service is stopped.
    ck.ok(&["renew"]);
    let mut pending = vec![ck.path("state")];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (65534, 65534),
                "{}",
                path.display()
            );
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    // The service's user renews with that state: its key and account are readable to it.
    let output = as_nobody(&ck, &["renew", "--force"]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
