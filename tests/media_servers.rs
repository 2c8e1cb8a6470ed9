//! Real media servers driven end to end: certkeeper issues against pebble, deploys in the
//! format the server reads, reloads it the way it supports, and the live check against the
//! server's own TLS port passes; a renewal then changes what the server serves, and a reload
//! that does nothing ends in rollback.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Certkeeper, Killed, Pebble, free_port, require};

/// Writes an executable shell script at `path` (a restart recipe).
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Waits (bounded) until 127.0.0.1:`port` completes a TLS handshake.
fn wait_for_tls(port: u16, what: &str) {
    common::wait_for(
        &format!("{what} to serve TLS on {port}"),
        Duration::from_secs(30),
        || serves_tls(port),
        String::new,
    );
}

fn serves_tls(port: u16) -> bool {
    certkeeper::deploy::verify::presented_chain(&format!("127.0.0.1:{port}"), "media.example.com")
        .is_ok()
}

/// The leaf the endpoint serves now.
fn served_serial(port: u16) -> String {
    let chain = certkeeper::deploy::verify::presented_chain(
        &format!("127.0.0.1:{port}"),
        "media.example.com",
    )
    .expect("a TLS handshake");
    certkeeper::deploy::bundle::read_leaf_der(&chain[0])
        .unwrap()
        .serial
}

fn current_serial(ck: &Certkeeper) -> String {
    let pem = fs::read(ck.current_dir().join("fullchain.pem")).unwrap();
    certkeeper::deploy::bundle::read_leaf(&pem).unwrap().serial
}

/// coturn (Debian `coturn`) with TURN over TLS on `port`, reading `cert` and `key`.
fn coturn(dir: &Path, port: u16, cert: &Path, key: &Path) -> Killed {
    let log = dir.join("turnserver.log");
    let child = common::program("turnserver")
        .args([
            "-n",
            "--no-cli",
            "--no-dtls",
            "--simple-log",
            "--listening-ip",
            "127.0.0.1",
        ])
        .args(["--listening-port", &free_port().to_string()])
        .args(["--tls-listening-port", &port.to_string()])
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--pkey={}", key.display()))
        .arg("--pidfile")
        .arg(dir.join("turnserver.pid"))
        .arg("--userdb")
        .arg(dir.join("turndb"))
        .arg("--log-file")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnserver");
    let coturn = Killed(child);
    common::wait_for(
        &format!("coturn to serve TLS on {port}"),
        Duration::from_secs(10),
        || serves_tls(port),
        || common::read_log(&log),
    );
    coturn
}

#[test]
fn coturn_turn_over_tls_serves_each_renewal_after_sigusr2() {
    require("turnserver");
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let port = free_port();
    let _coturn = coturn(
        ck.dir.path(),
        port,
        &ck.path("out/fullchain.pem"),
        &ck.path("out/privkey.pem"),
    );
    assert_eq!(served_serial(port), current_serial(&ck));

    // The recipe of docs/servers/coturn.md: SIGUSR2 re-reads the certificate and key.
    let pidfile = ck.path("turnserver.pid");
    let recipe = format!(
        "reload_pidfile = \"{}\"\nreload_signal = \"USR2\"\nverify = [{{ endpoint = \"127.0.0.1:{port}\", sni = \"media.example.com\" }}]",
        pidfile.display()
    );
    ck.rewrite(&pebble, &["media.example.com"], &recipe);
    let before = current_serial(&ck);
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    let after = current_serial(&ck);
    assert_ne!(before, after);
    assert_eq!(served_serial(port), after, "coturn serves the renewal");

    // A reload that does nothing: the live check fails, and certkeeper rolls back.
    let broken = format!(
        "reload = \"true\"\nverify_timeout_secs = 3\nverify = [{{ endpoint = \"127.0.0.1:{port}\", sni = \"media.example.com\" }}]"
    );
    ck.rewrite(&pebble, &["media.example.com"], &broken);
    let output = ck.run(&["renew", "--force"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("rolled back") || said.contains("rolling back"),
        "{said}"
    );
    assert_eq!(
        current_serial(&ck),
        after,
        "the previous certificate is back in place"
    );
    assert_eq!(served_serial(port), after);
}

#[test]
fn nginx_rtmp_serves_hls_over_https_with_each_renewal() {
    require("nginx");
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let hls = ck.path("hls");
    fs::create_dir_all(&hls).unwrap();
    fs::write(hls.join("stream.m3u8"), "#EXTM3U\n#EXT-X-VERSION:3\n").unwrap();
    let rtmp_port = free_port();
    let nginx = common::Nginx::start_rtmp(
        &ck.path("out/fullchain.pem"),
        &ck.path("out/privkey.pem"),
        &hls,
        rtmp_port,
    );
    let root = ck.path("pebble-root.pem");
    fs::write(&root, pebble.issuing_root_pem()).unwrap();

    // The recipe of docs/servers/nginx-rtmp.md: SIGHUP to the master, live check on HTTPS.
    let recipe = format!(
        "reload_pidfile = \"{}\"\nverify = [{{ endpoint = \"127.0.0.1:{}\", sni = \"media.example.com\" }}]",
        nginx.pidfile.display(),
        nginx.port
    );
    ck.rewrite(&pebble, &["media.example.com"], &recipe);
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    // nginx's old worker may still answer a new connection for a moment after the reload.
    ck.wait_until(
        "nginx to serve the renewal",
        Duration::from_secs(10),
        || served_serial(nginx.port) == current_serial(&ck),
    );
    // HLS over HTTPS, verified against the CA's root, and RTMP ingest still open.
    let playlist =
        common::https_get_named(nginx.port, "media.example.com", "/hls/stream.m3u8", &root);
    assert!(playlist.starts_with("#EXTM3U"), "{playlist}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", rtmp_port)).is_ok());
}

/// The Wowza stand-in of `tests/java/KeyServer.java`, compiled into `dir`.
fn compile_key_server(dir: &Path) {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/KeyServer.java");
    let compiled = common::program("javac")
        .arg("-d")
        .arg(dir)
        .arg(source)
        .output()
        .expect("javac");
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
}

#[test]
fn a_java_keystore_server_serves_the_hls_key_with_each_renewal_after_a_restart() {
    require("java");
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let password = ck.path("p12.pass");
    fs::write(&password, "changeit-7\n").unwrap();
    let keystore = ck.path("keystores/media.p12");
    let output = format!(
        "\n[certificate.output]\ndir = \"out\"\npkcs12 = \"{}\"\npkcs12_password_file = \"{}\"\n",
        keystore.display(),
        password.display()
    );
    let with_output = |extra: &str| {
        ck.rewrite(&pebble, &["media.example.com"], extra);
        let text = fs::read_to_string(&ck.config)
            .unwrap()
            .replace("\n\n[certificate.output]\ndir = \"out\"\n", &output);
        fs::write(&ck.config, text).unwrap();
    };
    with_output("");
    ck.ok(&["renew"]);

    // keytool reads the keystore with the configured password.
    let listing = common::program("keytool")
        .args([
            "-list",
            "-storetype",
            "PKCS12",
            "-storepass",
            "changeit-7",
            "-keystore",
        ])
        .arg(&keystore)
        .output()
        .expect("keytool");
    assert!(String::from_utf8_lossy(&listing.stdout).contains("PrivateKeyEntry"));

    // Like Wowza with a static KeyStorePath, it reads the keystore once: the recipe restarts it.
    let classes = ck.path("classes");
    compile_key_server(&classes);
    let port = free_port();
    let pidfile = ck.path("keyserver.pid");
    let restart = ck.path("restart-keyserver");
    script(
        &restart,
        &format!(
            "[ -f {pid} ] && kill $(cat {pid}) 2>/dev/null; sleep 0.2\n\
             setsid {java} -cp {classes} KeyServer {keystore} {password} {port} {pid} \
             </dev/null >/dev/null 2>&1 &\n",
            pid = pidfile.display(),
            java = require("java").display(),
            classes = classes.display(),
            keystore = keystore.display(),
            password = password.display(),
        ),
    );
    let started = common::program("sh").arg(&restart).status().unwrap();
    assert!(started.success());
    let _stop = StopByPidfile(pidfile.clone());
    wait_for_tls(port, "the key server");
    assert_eq!(served_serial(port), current_serial(&ck));

    with_output(&format!(
        "reload = \"{}\"\nverify = [{{ endpoint = \"127.0.0.1:{port}\", sni = \"media.example.com\" }}]",
        restart.display()
    ));
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    assert_eq!(served_serial(port), current_serial(&ck));
    // The HLS key over HTTPS, verified against the CA's root.
    let root = ck.path("pebble-root.pem");
    fs::write(&root, pebble.issuing_root_pem()).unwrap();
    let key = common::https_get_named(port, "media.example.com", "/live/key", &root);
    assert_eq!(key, "0123456789abcdef");
}

/// Stops the process whose PID is in the file, on drop.
struct StopByPidfile(std::path::PathBuf);

impl Drop for StopByPidfile {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// An icecast2 config: TLS on `port` with certkeeper's combined PEM, logs and pidfile in `run`
/// (owned by the user icecast drops to).
fn icecast_config(dir: &Path, run: &Path, port: u16, combined: &Path) -> std::path::PathBuf {
    let config = dir.join("icecast.xml");
    fs::write(
        &config,
        format!(
            "<icecast>\n<limits><clients>10</clients><sources>2</sources></limits>\n\
             <authentication><source-password>s3cret-src</source-password><admin-user>admin</admin-user>\
             <admin-password>s3cret-adm</admin-password></authentication>\n<hostname>media.example.com</hostname>\n\
             <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address><ssl>1</ssl></listen-socket>\n\
             <paths><basedir>/usr/share/icecast2</basedir><logdir>{run}</logdir>\
             <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>\
             <pidfile>{run}/icecast.pid</pidfile><ssl-certificate>{combined}</ssl-certificate></paths>\n\
             <logging><errorlog>error.log</errorlog><accesslog>access.log</accesslog><loglevel>3</loglevel></logging>\n\
             <security><chroot>0</chroot><changeowner><user>nobody</user><group>nogroup</group></changeowner></security>\n\
             </icecast>\n",
            run = run.display(),
            combined = combined.display(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn icecast_reads_the_combined_pem_at_start_only_so_the_recipe_restarts_it() {
    require("icecast2");
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    let with_combined = |extra: &str| {
        ck.rewrite(&pebble, &["media.example.com"], extra);
        let text = fs::read_to_string(&ck.config).unwrap().replace(
            "[certificate.output]\ndir = \"out\"\n",
            // icecast reads the file after dropping to its user: the recipe's group and mode.
            "[certificate.output]\ndir = \"out\"\ncombined = \"icecast/combined.pem\"\n\
             group = \"nogroup\"\nkey_mode = \"0640\"\n",
        );
        fs::write(&ck.config, text).unwrap();
    };
    with_combined("");
    ck.ok(&["renew"]);
    // icecast drops to the user nobody, who must reach its log directory.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(ck.dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let run = ck.path("icecast-run");
    fs::create_dir_all(&run).unwrap();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    nix::unistd::chown(&run, Some(nobody.uid), None).unwrap();
    let port = free_port();
    let config = icecast_config(ck.dir.path(), &run, port, &ck.path("icecast/combined.pem"));
    let pidfile = run.join("icecast.pid");
    let restart = ck.path("restart-icecast");
    script(
        &restart,
        &format!(
            // As `systemctl restart` does: the old process gone (at most 10 s) before the new
            // one starts, or the new one may find the port still taken.
            "pid=$(cat {pid} 2>/dev/null)\n\
             if [ -n \"$pid\" ] && kill \"$pid\" 2>/dev/null; then\n\
               i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
             fi\n\
             {icecast} -b -c {config} >/dev/null 2>&1\n",
            pid = pidfile.display(),
            icecast = require("icecast2").display(),
            config = config.display(),
        ),
    );
    assert!(
        common::program("sh")
            .arg(&restart)
            .status()
            .unwrap()
            .success()
    );
    let _stop = StopByPidfile(pidfile.clone());
    wait_for_tls(port, "icecast's TLS port");
    let first = current_serial(&ck);
    assert_eq!(served_serial(port), first);

    // SIGHUP re-reads icecast's config, not its certificate: the live check catches it and
    // certkeeper rolls back.
    let verify = format!(
        "verify_timeout_secs = 3\nverify = [{{ endpoint = \"127.0.0.1:{port}\", sni = \"media.example.com\" }}]"
    );
    with_combined(&format!(
        "reload_pidfile = \"{}\"\n{verify}",
        pidfile.display()
    ));
    let output = ck.run(&["renew", "--force"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("still serves another certificate"), "{said}");
    assert_eq!(current_serial(&ck), first, "rolled back");

    // The recipe: restart icecast.
    with_combined(&format!("reload = \"{}\"\n{verify}", restart.display()));
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    assert_ne!(current_serial(&ck), first);
    let served = certkeeper::deploy::verify::presented_chain(
        &format!("127.0.0.1:{port}"),
        "media.example.com",
    )
    .unwrap_or_else(|e| {
        let log = fs::read_to_string(run.join("error.log")).unwrap_or_default();
        panic!("icecast after the restart: {e}\n{log}")
    });
    let served = certkeeper::deploy::bundle::read_leaf_der(&served[0])
        .unwrap()
        .serial;
    assert_eq!(served, current_serial(&ck));
}

#[test]
fn hfs_notices_the_new_files_by_itself() {
    let hfs = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/hfs/node_modules/.bin/hfs");
    assert!(
        hfs.exists(),
        "hfs is missing: run scripts/deps --tests (npm package hfs, in target/hfs)"
    );
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    // Single files, each replaced by a rename: HFS watches the file paths, and a switch of
    // certkeeper's `dir` link goes unnoticed (seen here: the live check then rolls back).
    let single_files = |extra: &str| {
        ck.rewrite(&pebble, &["media.example.com"], extra);
        let text = fs::read_to_string(&ck.config).unwrap().replace(
            "[certificate.output]\ndir = \"out\"\n",
            "[certificate.output]\nfullchain = \"hfs/cert.pem\"\nkey = \"hfs/key.pem\"\n",
        );
        fs::write(&ck.config, text).unwrap();
    };
    single_files("");
    ck.ok(&["renew"]);
    let home = ck.path("hfs");
    fs::create_dir_all(&home).unwrap();
    let port = free_port();
    fs::write(
        home.join("config.yaml"),
        format!(
            "port: {}\nhttps_port: {port}\nlisten_interface: 127.0.0.1\ncert: {}\nprivate_key: {}\n",
            free_port(),
            ck.path("hfs/cert.pem").display(),
            ck.path("hfs/key.pem").display()
        ),
    )
    .unwrap();
    let child = common::program("node")
        .arg(&hfs)
        .arg("--cwd")
        .arg(&home)
        .stdout(fs::File::create(home.join("hfs.log")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hfs");
    let _hfs = Killed(child);
    wait_for_tls(port, "hfs's TLS port");
    assert_eq!(served_serial(port), current_serial(&ck));

    // No reload at all: HFS watches its certificate files; the live check waits for it.
    single_files(&format!(
        "verify_timeout_secs = 20\nverify = [{{ endpoint = \"127.0.0.1:{port}\", sni = \"media.example.com\" }}]"
    ));
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    assert_eq!(served_serial(port), current_serial(&ck));
    let log = fs::read_to_string(home.join("hfs.log")).unwrap_or_default();
    assert!(log.matches("certificate loaded").count() >= 2, "{log}");
}

/// A minimal Janus: the HTTP transport only (HTTPS on `port`), no plugins, the DTLS
/// certificate and the HTTPS certificate both from certkeeper's files.
fn janus_config(dir: &Path, port: u16, cert: &Path, key: &Path) -> std::path::PathBuf {
    let (conf, plugins, transports) = (
        dir.join("conf"),
        dir.join("plugins"),
        dir.join("transports"),
    );
    for d in [&conf, &plugins, &transports] {
        fs::create_dir_all(d).unwrap();
    }
    let http = "/usr/lib/x86_64-linux-gnu/janus/transports/libjanus_http.so";
    let _ = std::os::unix::fs::symlink(http, transports.join("libjanus_http.so"));
    let certificates = format!(
        "certificates: {{\n\tcert_pem = \"{}\"\n\tcert_key = \"{}\"\n}}\n",
        cert.display(),
        key.display()
    );
    fs::write(
        conf.join("janus.jcfg"),
        format!(
            "general: {{\n\tconfigs_folder = \"{c}\"\n\tplugins_folder = \"{p}\"\n\ttransports_folder = \"{t}\"\n\
             \tevents_folder = \"{p}\"\n\tloggers_folder = \"{p}\"\n\tdebug_level = 4\n}}\n{certificates}\
             media: {{\n}}\nnat: {{\n\tice_lite = true\n}}\n",
            c = conf.display(),
            p = plugins.display(),
            t = transports.display(),
        ),
    )
    .unwrap();
    fs::write(
        conf.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n\tbase_path = \"/janus\"\n\thttp = true\n\tport = {}\n\tip = \"127.0.0.1\"\n\
             \thttps = true\n\tsecure_port = {port}\n\tsecure_ip = \"127.0.0.1\"\n}}\n{certificates}",
            free_port()
        ),
    )
    .unwrap();
    conf.join("janus.jcfg")
}

/// The SHA-256 fingerprint of the leaf of `fullchain`, as Janus logs the DTLS one.
fn fingerprint(fullchain: &Path) -> String {
    use rustls_pki_types::pem::PemObject;
    let leaf = rustls_pki_types::CertificateDer::pem_file_iter(fullchain)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &leaf);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn janus_needs_a_restart_for_its_dtls_and_https_certificate() {
    require("janus");
    let pebble = Pebble::start(None);
    let ck = Certkeeper::new(&pebble, &["media.example.com"], "");
    ck.ok(&["renew"]);
    let home = ck.path("janus");
    let port = free_port();
    let (cert, key) = (ck.path("out/fullchain.pem"), ck.path("out/privkey.pem"));
    let config = janus_config(&home, port, &cert, &key);
    let (pidfile, log) = (home.join("janus.pid"), home.join("janus.log"));
    let restart = ck.path("restart-janus");
    script(
        &restart,
        &format!(
            "[ -f {pid} ] && kill $(cat {pid}) 2>/dev/null && sleep 1\n: > {log}\n\
             setsid {janus} -C {config} -F {conf} -p {pid} -L {log} </dev/null >/dev/null 2>&1 &\n",
            pid = pidfile.display(),
            log = log.display(),
            janus = require("janus").display(),
            config = config.display(),
            conf = home.join("conf").display(),
        ),
    );
    assert!(
        common::program("sh")
            .arg(&restart)
            .status()
            .unwrap()
            .success()
    );
    let _stop = StopByPidfile(pidfile.clone());
    wait_for_tls(port, "janus's HTTPS transport");
    let dtls = |fingerprint: &str| {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&format!("Fingerprint of our certificate: {fingerprint}"))
    };
    assert!(
        dtls(&fingerprint(&cert)),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );

    // The recipe: restart Janus; its DTLS certificate (WebRTC) and the HTTPS transport change.
    ck.rewrite(
        &pebble,
        &["media.example.com"],
        &format!(
            "reload = \"{}\"\nverify = [{{ endpoint = \"127.0.0.1:{port}\", sni = \"media.example.com\" }}]",
            restart.display()
        ),
    );
    let said = ck.ok(&["renew", "--force"]);
    assert!(said.contains("media: renewed"), "{said}");
    assert_eq!(served_serial(port), current_serial(&ck));
    ck.wait_until(
        "janus to log the new DTLS fingerprint",
        Duration::from_secs(10),
        || dtls(&fingerprint(&cert)),
    );
}
