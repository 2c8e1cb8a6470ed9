//! The product as installed: the Debian package (`scripts/package`) under a real systemd 252 as
//! PID 1 (a Debian 12 container, `common::systemd`), driven as an operator would. pebble runs
//! inside with its HTTP-01 port at 80, so the CA validates against the unit's own listener;
//! nginx, coturn and Icecast are the servers the shipped unit must get to load new
//! certificates without any privilege of its own (the `certkeeper-reload@UNIT.path` triggers).
//!
//! One booted container for every scenario (booting is the slow part); each step prints PASS
//! and how long it took.

use crate::common;

use std::time::{Duration, Instant};

use common::systemd::{Container, text};
use common::{program, require_root};

/// Runs one scenario step and says so.
fn step(name: &str, run: impl FnOnce()) {
    let started = Instant::now();
    run();
    println!("PASS {name} ({:.1} s)", started.elapsed().as_secs_f64());
}

/// The commit whose package the upgrade starts from: the last one that landed before the
/// unprivileged reload triggers, `certkeeper reload` and the package's maintainer scripts.
const EARLIER: &str = "193cc90";

/// The package of commit [`EARLIER`], built once in its own worktree under `target/` (a full
/// build, a few minutes) and kept beside the container root, outside the clone, so a rerun on
/// this machine (CI's fresh clone included) finds it.
fn earlier_package() -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let kept =
        std::path::PathBuf::from(format!("/var/cache/certkeeper-tests/earlier-{EARLIER}.deb"));
    if kept.exists() {
        return kept;
    }
    let known = program("git")
        .args(["cat-file", "-e", &format!("{EARLIER}^{{commit}}")])
        .current_dir(root)
        .status()
        .expect("git");
    assert!(
        known.success(),
        "commit {EARLIER} is not in this clone (a shallow clone?): the upgrade test installs its \
         package first; clone with history, or put that package at {}",
        kept.display()
    );
    let tree = std::path::Path::new(root).join(format!("target/earlier-{EARLIER}"));
    if !tree.join("Cargo.toml").exists() {
        let _ = std::fs::remove_dir_all(&tree);
        let _ = program("git")
            .args(["worktree", "prune"])
            .current_dir(root)
            .status();
        let added = program("git")
            .args(["worktree", "add", "--detach"])
            .arg(&tree)
            .arg(EARLIER)
            .current_dir(root)
            .output()
            .expect("git worktree");
        assert!(added.status.success(), "{}", text(&added));
    }
    // That commit's scripts/package builds in its own target/ (it predates CARGO_TARGET_DIR).
    let built = program("bash")
        .arg(tree.join("scripts/package"))
        .args(["--profile", "dev"])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("the earlier scripts/package");
    assert!(built.status.success(), "{}", text(&built));
    let deb = std::fs::read_dir(tree.join("target/debian"))
        .expect("the earlier package")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    std::fs::create_dir_all("/var/cache/certkeeper-tests").expect("the cache directory");
    std::fs::copy(&deb, &kept).expect("keep the earlier package");
    kept
}

const CONFIG: &str = r#"[acme]
directory = "https://127.0.0.1:14000/dir"
staging_directory = "https://127.0.0.1:14000/dir"
extra_root = "/etc/pebble/root.pem"
contact = ["ops@example.com"]

[daemon]
resolvers = ["127.0.0.1:8053"]

[[certificate]]
name = "media"
domains = ["media.example.com"]
reload_unit = "nginx.service"
reload_timeout_secs = 10
verify = [{ endpoint = "127.0.0.1:443" }]
verify_timeout_secs = 10

[certificate.output]
fullchain = "/etc/nginx/tls/fullchain.pem"
key = "/etc/nginx/tls/privkey.pem"
"#;

/// What the earlier package runs before the upgrade: a certificate and nothing to reload.
const EARLY: &str = r#"[acme]
directory = "https://127.0.0.1:14000/dir"
extra_root = "/etc/pebble/root.pem"

[daemon]
resolvers = ["127.0.0.1:8053"]

[[certificate]]
name = "early"
domains = ["early.example.com"]
"#;

const TURN: &str = r#"
[[certificate]]
name = "turn"
domains = ["turn.example.com"]
reload_unit = "coturn.service"
reload_signal = "USR2"
reload_timeout_secs = 10
verify = [{ endpoint = "127.0.0.1:5349" }]
verify_timeout_secs = 10

[certificate.output]
fullchain = "/etc/coturn/tls/fullchain.pem"
key = "/etc/coturn/tls/privkey.pem"
group = "turnserver"
key_mode = "0640"
"#;

const LIVE: &str = r#"
[[certificate]]
name = "live"
domains = ["live.example.com"]
reload_unit = "icecast2.service"
reload_unit_action = "restart"
reload_timeout_secs = 20
verify = [{ endpoint = "127.0.0.1:8443" }]
verify_timeout_secs = 10

[certificate.output]
combined = "/etc/icecast2/tls/combined.pem"
group = "icecast"
key_mode = "0640"
"#;

const COTURN: &str = "listening-ip=127.0.0.1\nlistening-port=3478\ntls-listening-port=5349\n\
    cert=/etc/coturn/tls/fullchain.pem\npkey=/etc/coturn/tls/privkey.pem\nrealm=example.com\nno-cli\n";

const ICECAST: &str = "<icecast>\n<limits><clients>10</clients><sources>2</sources></limits>\n\
    <authentication><source-password>s3cret-src</source-password><admin-user>admin</admin-user>\
    <admin-password>s3cret-adm</admin-password></authentication>\n<hostname>live.example.com</hostname>\n\
    <listen-socket><port>8443</port><bind-address>127.0.0.1</bind-address><ssl>1</ssl></listen-socket>\n\
    <paths><basedir>/usr/share/icecast2</basedir><logdir>/var/log/icecast2</logdir>\
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>\
    <ssl-certificate>/etc/icecast2/tls/combined.pem</ssl-certificate></paths>\n\
    <logging><errorlog>error.log</errorlog><loglevel>3</loglevel></logging>\n\
    <security><chroot>0</chroot></security>\n</icecast>\n";

const NGINX_SITE: &str = "server {\n listen 127.0.0.1:443 ssl;\n server_name media.example.com;\n \
    ssl_certificate /etc/nginx/tls/fullchain.pem;\n ssl_certificate_key /etc/nginx/tls/privkey.pem;\n \
    return 200 \"media\\n\";\n}\n";

/// pebble (HTTP-01 at port 80) and its DNS (every name is 127.0.0.1), as transient units.
fn start_pebble(ct: &Container, tls: &tempfile::TempDir) {
    let (root, cert, key) = (
        tls.path().join("root.pem"),
        tls.path().join("cert.pem"),
        tls.path().join("key.pem"),
    );
    common::write_tls_identity(&root, &cert, &key);
    ct.copy_in(&root, "/etc/pebble/root.pem");
    ct.copy_in(&cert, "/etc/pebble/cert.pem");
    ct.copy_in(&key, "/etc/pebble/key.pem");
    ct.write(
        "/etc/pebble/pebble.json",
        br#"{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
            "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
            "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}"#,
    );
    ct.ok(
        "systemd-run --unit=challtestsrv /usr/bin/pebble-challtestsrv -dns01 127.0.0.1:8053 \
         -http01 '' -https01 '' -tlsalpn01 '' -management 127.0.0.1:8055 -defaultIPv6 '' && \
         systemd-run --unit=pebble -E PEBBLE_VA_NOSLEEP=1 /usr/bin/pebble \
         -config /etc/pebble/pebble.json -dnsserver 127.0.0.1:8053",
    );
    ct.wait_until("pebble", Duration::from_secs(30), |c| {
        c.sh("ss -ltn | grep -q 127.0.0.1:14000").status.success()
    });
}

/// The serial of the certificate `endpoint` serves, as openssl prints it.
fn served_serial(ct: &Container, endpoint: &str, name: &str) -> String {
    ct.ok(&format!(
        "echo | openssl s_client -connect {endpoint} -servername {name} 2>/dev/null | openssl x509 -noout -serial"
    ))
    .trim()
    .to_string()
}

fn deployed_serial(ct: &Container, name: &str) -> String {
    ct.ok(&format!(
        "openssl x509 -noout -serial -in /var/lib/certkeeper/certs/{name}/current/cert.pem"
    ))
    .trim()
    .to_string()
}

/// `systemd-analyze security certkeeper`'s overall exposure.
fn security(ct: &Container) -> f64 {
    let said = ct.ok("systemd-analyze security certkeeper.service | tail -1");
    said.split("level for certkeeper.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{said}"))
}

fn main_pid(ct: &Container) -> String {
    ct.ok("systemctl show -p MainPID --value certkeeper")
        .trim()
        .to_string()
}

#[test]
fn the_package_under_a_real_systemd() {
    if !require_root(
        "the_package_under_a_real_systemd",
        "it boots a container with systemd-nspawn",
    ) {
        return;
    }
    let debs = tempfile::tempdir().unwrap();
    let old = earlier_package();
    // This tree's package, versioned above the earlier one (both say 0.1.0).
    let new = common::debian_package_as("0.1.0-2", debs.path());
    let mut ct = Container::boot("installed");
    let tls = tempfile::tempdir().unwrap();

    step(
        "the package of the earlier commit obtains a certificate",
        || {
            ct.copy_in(&old, "/root/old.deb");
            ct.copy_in(&new, "/root/new.deb");
            ct.ok("dpkg -i /root/old.deb");
            println!(
                "systemd-analyze security certkeeper, commit {EARLIER}: {}",
                security(&ct)
            );
            start_pebble(&ct, &tls);
            ct.write("/etc/certkeeper/certkeeper.toml", EARLY.as_bytes());
            ct.ok("systemctl enable --now certkeeper");
            ct.wait_until("the first certificate", Duration::from_secs(60), |c| {
                c.sh("test -e /var/lib/certkeeper/certs/early/current/cert.pem")
                    .status
                    .success()
            });
        },
    );

    step(
        "upgrade: restarted on the new binary, config and state kept",
        || {
            let (pid, serial) = (main_pid(&ct), deployed_serial(&ct, "early"));
            ct.ok("dpkg -i /root/new.deb");
            ct.wait_until("the restarted service", Duration::from_secs(30), |c| {
                let now = main_pid(c);
                now != pid && now != "0"
            });
            assert_eq!(ct.ok("dpkg-query -W -f '${Version}' certkeeper"), "0.1.0-2");
            assert_eq!(deployed_serial(&ct, "early"), serial);
            assert_eq!(ct.ok("cat /etc/certkeeper/certkeeper.toml"), EARLY);
            let said = ct.ok("certkeeper status");
            assert!(said.contains("early.example.com"), "{said}");
            let score = security(&ct);
            println!("systemd-analyze security certkeeper, this tree: {score}");
            assert!(score <= 2.0);
        },
    );

    step(
        "first certificate under the unit, nginx reloaded through its trigger",
        || {
            ct.write("/etc/nginx/sites-available/default", NGINX_SITE.as_bytes());
            ct.ok("mkdir -p /etc/nginx/tls && cd /etc/nginx/tls && \
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout privkey.pem -out fullchain.pem -days 2 -subj /CN=placeholder 2>/dev/null && \
             chown -R certkeeper:certkeeper /etc/nginx/tls && systemctl start nginx");
            ct.write("/etc/certkeeper/certkeeper.toml", CONFIG.as_bytes());
            // The recipe of docs/servers/README.md: the output directory, and the trigger.
            ct.write(
                "/etc/systemd/system/certkeeper.service.d/outputs.conf",
                b"[Service]\nReadWritePaths=-/etc/nginx/tls\n",
            );
            ct.ok(
            "systemctl daemon-reload && systemctl enable --now certkeeper-reload@nginx.service.path \
             && systemctl restart certkeeper",
        );
            ct.wait_until("the first certificate", Duration::from_secs(60), |c| {
                c.sh("test -e /var/lib/certkeeper/certs/media/current/cert.pem")
                    .status
                    .success()
            });
            // `current` switches before the reload and the live check: wait for the deployment.
            ct.wait_until("the deployment's end", Duration::from_secs(60), |c| {
                text(&c.sh("certkeeper status")).contains("ok via http-01")
            });
            let deployed = deployed_serial(&ct, "media");
            assert_eq!(
                served_serial(&ct, "127.0.0.1:443", "media.example.com"),
                deployed
            );
            let journal =
                ct.ok("journalctl --no-pager -u 'certkeeper-reload@nginx.service.service'");
            assert!(journal.contains("Finished"), "{journal}");
            let user = ct.ok("ps -o user= -p $(systemctl show -p MainPID --value certkeeper)");
            assert_eq!(user.trim(), "certkeeper");
        },
    );

    step(
        "coturn: SIGUSR2 through its trigger, and rollback when nothing reloads",
        || {
            ct.write("/etc/turnserver.conf", COTURN.as_bytes());
            ct.ok("mkdir -p /etc/coturn/tls && cd /etc/coturn/tls && \
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout privkey.pem -out fullchain.pem -days 2 -subj /CN=placeholder 2>/dev/null && \
             chown -R certkeeper:turnserver . && chmod 750 . && chmod 640 privkey.pem && \
             usermod -aG turnserver certkeeper && systemctl start coturn");
            ct.write(
                "/etc/certkeeper/certkeeper.toml",
                format!("{CONFIG}{TURN}").as_bytes(),
            );
            ct.write(
                "/etc/systemd/system/certkeeper.service.d/outputs.conf",
                b"[Service]\nReadWritePaths=-/etc/nginx/tls -/etc/coturn/tls -/etc/icecast2/tls\n",
            );
            // A new group for certkeeper's user: a restart picks it up.
            ct.ok(
            "systemctl daemon-reload && systemctl enable --now certkeeper-reload@coturn.service.path \
             && systemctl restart certkeeper",
        );
            let said = ct.ok("certkeeper renew --force turn");
            assert!(said.contains("renewed"), "{said}");
            assert_eq!(
                served_serial(&ct, "127.0.0.1:5349", "turn.example.com"),
                deployed_serial(&ct, "turn")
            );
            let journal = ct.ok("journalctl --no-pager -u coturn");
            assert!(journal.contains("Sent signal SIGUSR2"), "{journal}");
            let mode = ct.ok("stat -c '%U:%G %a' /etc/coturn/tls/privkey.pem");
            assert_eq!(mode.trim(), "certkeeper:turnserver 640");
            // Nothing carries the signal out: the live check fails and the previous one is back.
            let before = deployed_serial(&ct, "turn");
            ct.ok("systemctl disable --now certkeeper-reload@coturn.service.path");
            let said = text(&ct.sh("certkeeper renew --force turn"));
            assert!(said.contains("rolled back"), "{said}");
            assert_eq!(deployed_serial(&ct, "turn"), before);
            assert_eq!(
                served_serial(&ct, "127.0.0.1:5349", "turn.example.com"),
                before
            );
            ct.ok("systemctl enable --now certkeeper-reload@coturn.service.path");
        },
    );

    step(
        "icecast (a restart): restarted through its trigger, rollback after a mere reload",
        || {
            ct.write("/etc/icecast2/icecast.xml", ICECAST.as_bytes());
            ct.ok("mkdir -p /etc/icecast2/tls && cd /etc/icecast2/tls && \
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout k.pem -out c.pem -days 2 -subj /CN=placeholder 2>/dev/null && \
             cat c.pem k.pem > combined.pem && rm c.pem k.pem && \
             chown -R certkeeper:icecast . && chmod 750 . && chmod 640 combined.pem && \
             usermod -aG icecast certkeeper && systemctl start icecast2");
            ct.write(
                "/etc/certkeeper/certkeeper.toml",
                format!("{CONFIG}{TURN}{LIVE}").as_bytes(),
            );
            ct.ok(
            "systemctl enable --now certkeeper-reload@icecast2.service.path && systemctl restart certkeeper",
        );
            let said = ct.ok("certkeeper renew --force live");
            assert!(said.contains("renewed"), "{said}");
            assert_eq!(
                served_serial(&ct, "127.0.0.1:8443", "live.example.com"),
                deployed_serial(&ct, "live")
            );
            // icecast re-reads its config on reload, not its certificate: the live check sees it.
            let before = deployed_serial(&ct, "live");
            ct.write(
                "/etc/certkeeper/certkeeper.toml",
                format!(
                    "{CONFIG}{TURN}{}",
                    LIVE.replace("\"restart\"", "\"reload\"")
                )
                .as_bytes(),
            );
            ct.ok("systemctl reload certkeeper");
            let said = text(&ct.sh("certkeeper renew --force live"));
            assert!(said.contains("rolled back"), "{said}");
            assert_eq!(
                served_serial(&ct, "127.0.0.1:8443", "live.example.com"),
                before
            );
            ct.write("/etc/certkeeper/certkeeper.toml", CONFIG.as_bytes());
            ct.ok("systemctl reload certkeeper");
        },
    );

    step(
        "a member of the certkeeper group uses the control socket",
        || {
            ct.ok("useradd -m bob && usermod -aG certkeeper bob");
            let said = ct.ok("runuser -u bob -- certkeeper status");
            assert!(said.contains("through the running daemon"), "{said}");
            let stranger =
                ct.sh("useradd -m eve; runuser -u eve -- certkeeper --config /dev/null status");
            assert_eq!(stranger.status.code(), Some(77), "{}", text(&stranger));
        },
    );

    step(
        "systemctl reload: taken, refused with the reason, journal priorities",
        || {
            ct.ok("systemctl reload certkeeper");
            ct.ok("cp /etc/certkeeper/certkeeper.toml /root/good.toml && echo 'chalenge = 1' >> /etc/certkeeper/certkeeper.toml");
            let refused = ct.sh("systemctl reload certkeeper");
            assert!(!refused.status.success(), "{}", text(&refused));
            let errors = ct.ok("journalctl --no-pager -u certkeeper -p err");
            assert!(
                errors.contains("the new configuration is invalid"),
                "{errors}"
            );
            assert!(
                !errors.contains(" INFO "),
                "info lines are not errors:\n{errors}"
            );
            // The broken file does not cut the operator off from the daemon.
            let said = ct.ok("certkeeper status");
            assert!(said.contains("media.example.com"), "{said}");
            ct.ok(
                "cp /root/good.toml /etc/certkeeper/certkeeper.toml && systemctl reload certkeeper",
            );
        },
    );

    step("a reload that does nothing ends in rollback", || {
        let before = deployed_serial(&ct, "media");
        ct.ok("systemctl disable --now certkeeper-reload@nginx.service.path");
        let failed = ct.sh("certkeeper renew --force media");
        let said = text(&failed);
        assert!(!failed.status.success(), "{said}");
        assert!(
            said.contains("certkeeper-reload@nginx.service.path") && said.contains("rolled back"),
            "{said}"
        );
        assert_eq!(deployed_serial(&ct, "media"), before);
        assert_eq!(
            served_serial(&ct, "127.0.0.1:443", "media.example.com"),
            before
        );
        ct.ok("systemctl enable --now certkeeper-reload@nginx.service.path");
    });

    step(
        "root renews while the service is stopped; the service still reads its state",
        || {
            ct.ok("systemctl stop certkeeper && certkeeper renew --force");
            let foreign = ct.ok("find /var/lib/certkeeper -user root | wc -l");
            assert_eq!(foreign.trim(), "0", "files root left behind");
            ct.ok("systemctl start certkeeper");
            let said = ct.ok("certkeeper renew --force");
            assert!(said.contains("renewed"), "{said}");
            let denied =
                ct.ok("journalctl --no-pager -u certkeeper | grep -c 'Permission denied' || true");
            assert_eq!(denied.trim(), "0");
        },
    );

    step(
        "an output directory outside ReadWritePaths names the fix",
        || {
            ct.ok("mkdir -p /srv/tls");
            ct.ok(
            "cp /root/good.toml /etc/certkeeper/certkeeper.toml && printf '\\n[[certificate]]\\nname = \"srv\"\\ndomains = [\"srv.example.com\"]\\n\\n[certificate.output]\\nfullchain = \"/srv/tls/fullchain.pem\"\\n' >> /etc/certkeeper/certkeeper.toml && systemctl reload certkeeper",
        );
            let said = text(&ct.sh("certkeeper renew --force srv"));
            assert!(said.contains("ReadWritePaths=-DIR"), "{said}");
            ct.ok(
                "cp /root/good.toml /etc/certkeeper/certkeeper.toml && systemctl reload certkeeper",
            );
        },
    );

    step("the watchdog restarts a daemon that hangs", || {
        ct.write(
            "/etc/systemd/system/certkeeper.service.d/watchdog.conf",
            b"[Service]\nWatchdogSec=3\nRestartSec=1\n",
        );
        ct.ok("systemctl daemon-reload && systemctl restart certkeeper");
        let pid = main_pid(&ct);
        ct.ok(&format!("kill -STOP {pid}"));
        ct.wait_until("a watchdog restart", Duration::from_secs(60), |c| {
            let now = main_pid(c);
            now != pid && now != "0"
        });
        let journal = ct.ok("journalctl --no-pager -u certkeeper");
        assert!(journal.contains("Watchdog timeout"), "{journal}");
        ct.ok("rm /etc/systemd/system/certkeeper.service.d/watchdog.conf && systemctl daemon-reload && systemctl restart certkeeper");
    });

    step(
        "reboot: the enabled service comes back with its certificate",
        || {
            let serial = deployed_serial(&ct, "media");
            ct.ok("systemctl enable nginx");
            ct.reboot();
            ct.wait_until(
                "certkeeper after the reboot",
                Duration::from_secs(60),
                |c| c.sh("systemctl is-active certkeeper").status.success(),
            );
            start_pebble(&ct, &tls);
            let said = ct.ok("certkeeper status");
            assert!(said.contains("through the running daemon"), "{said}");
            assert_eq!(
                served_serial(&ct, "127.0.0.1:443", "media.example.com"),
                serial
            );
        },
    );

    step(
        "remove stops the service and keeps the state; purge removes the config",
        || {
            ct.ok("dpkg -r certkeeper");
            assert!(!ct.sh("systemctl is-active certkeeper").status.success());
            ct.ok("test -e /var/lib/certkeeper/certs/media/current/cert.pem && test -e /etc/certkeeper/certkeeper.toml");
            ct.ok("dpkg -P certkeeper");
            ct.ok("test ! -e /etc/certkeeper && test -e /var/lib/certkeeper/certs/media/current/cert.pem");
        },
    );
}
