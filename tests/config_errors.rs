//! Bad configurations: exit code 78 and a message with file, line, key and what to write.

use crate::common;

use std::fs;

fn run_with(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), text)
}

fn run_in(dir: &std::path::Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("bad.toml");
    fs::write(&path, text).unwrap();
    let output = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&path)
        .arg("status")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

const CERT: &str = "[[certificate]]\nname = \"media\"\n";

#[test]
fn each_bad_config_names_file_line_and_fix() {
    let cases = [
        (
            format!("{CERT}domains = [\"a.example.com\"]\nreload_command = \"x\"\n"),
            ":4:",
            "reload_command",
        ),
        (
            format!("{CERT}domains = [\"a..example.com\"]\n"),
            ":3:",
            "write a name such as",
        ),
        (
            format!("{CERT}domains = [\"media example.com\"]\n"),
            ":3:",
            "it contains a space",
        ),
        (
            format!(
                "[daemon]\nlisten_adress = \"0.0.0.0:80\"\n{CERT}domains = [\"a.example.com\"]\n"
            ),
            ":2:",
            "daemon.listen_adress: unknown key (did you mean `listen`?)",
        ),
        (
            format!("{CERT}domains = [\"a.example.com\"]\nkey_type = \"ecdsa-p265\"\n"),
            ":4:",
            "certificate.key_type: \"ecdsa-p265\" is not one of",
        ),
        (
            format!(
                "[acme]\nextra_root = \"/no/such/root.pem\"\n{CERT}domains = [\"a.example.com\"]\n"
            ),
            ":2:",
            "does not exist",
        ),
        (
            format!("{CERT}domains = [\"*.example.com\"]\n"),
            ":3:",
            "dns-01",
        ),
        (
            format!("{CERT}domains = [\"a.example.com\"]\nkey_type = \"ed448\"\n"),
            ":4:",
            "rsa-2048",
        ),
        (
            format!("[acme]\nconcurrency = 0\n{CERT}domains = [\"a.example.com\"]\n"),
            ":2:",
            "from 1 to 64",
        ),
        (
            format!("[acme.limits]\norders_per_hour = 3\n{CERT}domains = [\"a.example.com\"]\n"),
            ":2:",
            "orders_per_3h",
        ),
        (
            format!("[acme]\npreferred_chain = \" \"\n{CERT}domains = [\"a.example.com\"]\n"),
            ":2:",
            "acme.preferred_chain: write the common name of the issuer",
        ),
        (
            format!(
                "{CERT}domains = [\"a.example.com\"]\n[certificate.output]\nowner = \"no-such-user\"\n"
            ),
            ":5:",
            "output.owner: no user \"no-such-user\" on this host",
        ),
        (
            format!(
                "{CERT}domains = [\"a.example.com\"]\n[certificate.output]\ngroup = \"no-such-group\"\n"
            ),
            ":5:",
            "output.group: no group \"no-such-group\" on this host",
        ),
    ];
    for (text, line, hint) in cases {
        let (code, stderr) = run_with(&text);
        assert_eq!(code, Some(78), "{text}\n{stderr}");
        assert!(
            stderr.contains(&format!("bad.toml{line}")),
            "{text}\n{stderr}"
        );
        assert!(stderr.contains(hint), "{text}\n{stderr}");
    }
}

#[test]
fn cluster_settings_say_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("short.secret"), "too short\n").unwrap();
    fs::write(dir.path().join("good.secret"), "x".repeat(48)).unwrap();
    fs::write(dir.path().join("empty.password"), "\n").unwrap();
    let good = "http://127.0.0.1:2379";
    let cases = [
        (
            "endpoints = []\nsecret_file = \"good.secret\"\n".to_string(),
            ":2:",
            "client URLs",
        ),
        (
            "endpoints = [\"etcd:2379\"]\nsecret_file = \"good.secret\"\n".to_string(),
            ":2:",
            "\"https://10.0.0.1:2379\"",
        ),
        (
            format!("endpoints = [\"{good}\"]\nsecret_file = \"short.secret\"\n"),
            ":3:",
            "holds 9 bytes; write at least 32",
        ),
        (
            format!("endpoints = [\"{good}\"]\nsecret_file = \"nosuch.secret\"\n"),
            ":3:",
            "does not exist",
        ),
        (
            format!("endpoints = [\"{good}\"]\nsecret_file = \"good.secret\"\nlease_secs = 1\n"),
            ":4:",
            "3 to 300",
        ),
        (
            format!("endpoints = [\"{good}\"]\nsecret_file = \"good.secret\"\nusername = \"ck\"\n"),
            ":",
            "username and password_file go together",
        ),
        (
            format!(
                "endpoints = [\"{good}\"]\nsecret_file = \"good.secret\"\nusername = \"ck\"\npassword_file = \"empty.password\"\n"
            ),
            ":5:",
            "its first line is empty: write the secret there",
        ),
    ];
    for (cluster, line, hint) in cases {
        let text = format!("[cluster]\n{cluster}{CERT}domains = [\"a.example.com\"]\n");
        let (code, stderr) = run_in(dir.path(), &text);
        assert_eq!(code, Some(78), "{text}\n{stderr}");
        assert!(
            stderr.contains(&format!("bad.toml{line}")),
            "{text}\n{stderr}"
        );
        assert!(stderr.contains(hint), "{text}\n{stderr}");
    }
    // A valid section is accepted.
    let text = format!(
        "[cluster]\nendpoints = [\"{good}\"]\nnode = \"edge-1\"\nsecret_file = \"good.secret\"\n{CERT}domains = [\"a.example.com\"]\n"
    );
    let (code, stderr) = run_in(dir.path(), &text);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_missing_config_file_says_which() {
    let output = std::process::Command::new(common::BIN)
        .args(["--config", "/nonexistent/certkeeper.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/certkeeper.toml"));
}

/// Every shipped example parses; the only errors allowed are files and directories of the
/// operator's own setup (password files, webroots), which the config names as missing.
#[test]
fn shipped_example_configs_are_valid() {
    let mut checked = 0;
    for entry in fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") || path.ends_with("try.toml") {
            continue;
        }
        match certkeeper::config::Config::load(&path) {
            Ok(config) => assert!(!config.certificates.is_empty(), "{}", path.display()),
            // Files and directories of the operator's own servers (password files, webroots).
            Err(e) => assert!(
                e.to_string().contains("does not exist; create it")
                    || e.to_string().contains("is not a directory"),
                "{e}"
            ),
        }
        checked += 1;
    }
    assert!(checked >= 7, "example.toml and one config per media server");
}

#[test]
fn a_secret_file_others_may_read_is_named_with_its_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("eab.key");
    fs::write(&key, "c2VjcmV0LWtleS1mb3ItdGhlLWNh\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "[acme.eab]\nkey_id = \"kid-1\"\nhmac_key_file = \"eab.key\"\n\n{CERT}domains = [\"media.example.com\"]\n"
    );
    let (_, said) = run_in(dir.path(), &text);
    assert!(
        said.contains("acme.eab.hmac_key_file") && said.contains("chmod 600"),
        "{said}"
    );
    // Owner-only: nothing said.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let (_, said) = run_in(dir.path(), &text);
    assert!(!said.contains("chmod 600"), "{said}");
}
