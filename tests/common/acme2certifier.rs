//! acme2certifier: the ACME server whose renewal windows (ARI) a test can place.

use super::*;

/// acme2certifier (an ACME server from PyPI that implements renewalInfo, RFC 9773) on a free
/// loopback port behind TLS, with a local OpenSSL CA. Its challenge validation is switched
/// off: these tests are about scheduling, and pebble covers validation. Killed on drop.
pub struct Acme2certifier {
    pub dir: tempfile::TempDir,
    pub directory_url: String,
    pub tls_root: PathBuf,
    _process: Killed,
}

const A2C_LAUNCHER: &str = r#"
import importlib.util, os, ssl, sys
os.environ["ACME_SRV_CONFIGFILE"] = sys.argv[1]
os.environ["ACME2CERTIFIER_I_KNOW_THE_RISK"] = "1"
import acme2certifier
path = os.path.join(os.path.dirname(acme2certifier.__file__), "share", "acme2certifier_wsgi.py")
spec = importlib.util.spec_from_file_location("a2c_wsgi", path)
wsgi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wsgi)
from wsgiref.simple_server import make_server
def app(environ, start):
    environ["wsgi.url_scheme"] = "https"
    environ["HTTPS"] = "on"
    return wsgi.application(environ, start)
server = make_server("127.0.0.1", int(sys.argv[2]), app, handler_class=wsgi.get_handler_cls())
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[3], sys.argv[4])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl Acme2certifier {
    /// `extra_config` is appended to its acme_srv.cfg (e.g. a `[Renewalinfo]` section).
    pub fn start(validity_days: u32, extra_config: &str) -> Acme2certifier {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/a2c-venv/bin/python");
        assert!(
            python.exists(),
            "acme2certifier is not installed: run scripts/deps --tests (it creates target/a2c-venv)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |name: &str| dir.path().join(name);
        let tls_root = p("tls-root.pem");
        write_tls_identity(&tls_root, &p("tls-cert.pem"), &p("tls-key.pem"));
        // The issuing CA.
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "acme2certifier test CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        ca.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        fs::write(p("ca.crt"), ca.self_signed(&ca_key).expect("ca").pem()).expect("ca.crt");
        fs::write(p("ca.key"), ca_key.serialize_pem()).expect("ca.key");
        fs::create_dir(p("certs")).expect("certs dir");
        let d = dir.path().display();
        fs::write(
            p("acme_srv.cfg"),
            format!(
                "[DEFAULT]\ndebug: True\n\n[Nonce]\nnonce_check_disable: False\n\n[CAhandler]\n\
                 handler_module: acme2certifier.cahandlers.openssl_ca_handler\nissuing_ca_key: {d}/ca.key\n\
                 issuing_ca_cert: {d}/ca.crt\nissuing_ca_crl: {d}/ca.crl\ncert_validity_days: {validity_days}\n\
                 cert_save_path: {d}/certs\nca_cert_chain_list: []\n\n[DBhandler]\nhandler: wsgi\n\
                 dbfile: {d}/acme_srv.db\n\n[Challenge]\nchallenge_validation_disable: True\n\n{extra_config}\n"
            ),
        )
        .expect("acme_srv.cfg");
        fs::write(p("launcher.py"), A2C_LAUNCHER).expect("launcher");
        let port = free_port();
        let child = Command::new(python)
            .arg(p("launcher.py"))
            .arg(p("acme_srv.cfg"))
            .arg(port.to_string())
            .arg(p("tls-cert.pem"))
            .arg(p("tls-key.pem"))
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(fs::File::create(p("a2c.log")).expect("log"))
            .spawn()
            .expect("start acme2certifier");
        let process = Killed(child);
        wait_for_port(port);
        Acme2certifier {
            directory_url: format!("https://127.0.0.1:{port}/directory"),
            tls_root,
            dir,
            _process: process,
        }
    }

    /// How many orders it has received that named a certificate they replace.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("a2c.log")).unwrap_or_default()
    }
}
