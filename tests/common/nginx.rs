//! A real nginx serving TLS with the certificate files certkeeper writes.

use super::*;

/// A real nginx serving TLS on a free loopback port with the given certificate files; its
/// master's PID is in `pidfile`. Killed on drop.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub pidfile: PathBuf,
    process: Killed,
}

/// nginx's workers outlive a killed master and keep serving its ports: stop it as a service
/// manager would (SIGTERM: the master stops its workers, then itself), bounded.
impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.process.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        // Polled by hand: a drop must not panic the way `wait_for` does on its limit.
        while Instant::now() < deadline && !matches!(self.process.0.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Nginx {
    /// TLS on a free port with these certificate files.
    pub fn start(fullchain: &Path, key: &Path) -> Nginx {
        Self::start_at(free_port(), fullchain, key)
    }

    /// TLS on `port` with these certificate files.
    pub fn start_at(port: u16, fullchain: &Path, key: &Path) -> Nginx {
        Self::start_with(
            port,
            &format!(
                "listen 127.0.0.1:{port} ssl;\n  server_name media.example.com;\n  ssl_certificate {};\n  \
                 ssl_certificate_key {};\n  return 200 \"ok\\n\";",
                fullchain.display(),
                key.display()
            ),
        )
    }

    /// Plain HTTP on `port`, serving files from `root` (another server holding "port 80").
    pub fn start_http(port: u16, root: &Path) -> Nginx {
        Self::start_with(
            port,
            &format!("listen 127.0.0.1:{port};\n  root {};", root.display()),
        )
    }

    /// A TLS port that routes by ALPN (`ssl_preread`): `acme-tls/1` handshakes to certkeeper's
    /// responder on `acme_port`, every other one to an HTTPS server (the "media server",
    /// answering "media") with `fullchain`/`key`. The case of a server that holds 443 for good.
    pub fn start_alpn_router(acme_port: u16, fullchain: &Path, key: &Path) -> Nginx {
        let (port, media) = (free_port(), free_port());
        let stream = format!(
            "stream {{\n map $ssl_preread_alpn_protocols $backend {{\n  ~\\bacme-tls/1\\b 127.0.0.1:{acme_port};\n  \
             default 127.0.0.1:{media};\n }}\n server {{\n  listen 127.0.0.1:{port};\n  ssl_preread on;\n  \
             proxy_pass $backend;\n }}\n}}\n"
        );
        let server = format!(
            "listen 127.0.0.1:{media} ssl;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  \
             return 200 \"media\\n\";",
            fullchain.display(),
            key.display()
        );
        let module = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n";
        Self::start_conf(port, module, &server, &stream)
    }

    /// nginx with the rtmp module (Debian `libnginx-mod-rtmp`): RTMP ingest on `rtmp_port`
    /// writing HLS into `hls`, and that HLS served over HTTPS with `fullchain`/`key`.
    pub fn start_rtmp(fullchain: &Path, key: &Path, hls: &Path, rtmp_port: u16) -> Nginx {
        let port = free_port();
        let module = "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n";
        let rtmp = format!(
            "rtmp {{\n server {{\n  listen 127.0.0.1:{rtmp_port};\n  application live {{\n   live on;\n   \
             hls on;\n   hls_path {};\n  }}\n }}\n}}\n",
            hls.display()
        );
        let server = format!(
            "listen 127.0.0.1:{port} ssl;\n  server_name media.example.com;\n  ssl_certificate {};\n  \
             ssl_certificate_key {};\n  location /hls/ {{ alias {}/; }}",
            fullchain.display(),
            key.display(),
            hls.display()
        );
        Self::start_conf(port, module, &server, &rtmp)
    }

    fn start_with(port: u16, server: &str) -> Nginx {
        Self::start_conf(port, "", server, "")
    }

    /// Plain HTTP on `port` for a load test (benchmarks): one worker per core, room for
    /// thousands of connections, and no keep-alive (each answer closes its connection, as
    /// certkeeper's listener does). Everything gets 404.
    pub fn start_for_load(port: u16) -> Nginx {
        Self::start_sized(
            port,
            "auto",
            16_384,
            "",
            &format!(
                "listen 127.0.0.1:{port} backlog=1024;\n  keepalive_timeout 0;\n  return 404;"
            ),
            "",
        )
    }

    fn start_conf(port: u16, head: &str, server: &str, tail: &str) -> Nginx {
        Self::start_sized(port, "1", 64, head, server, tail)
    }

    fn start_sized(
        port: u16,
        workers: &str,
        connections: u32,
        head: &str,
        server: &str,
        tail: &str,
    ) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("nginx.pid");
        let d = dir.path().display();
        let conf = format!(
            "{head}daemon off;\nworker_processes {workers};\nworker_rlimit_nofile {files};\n\
             pid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections {connections}; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             server {{\n  {server}\n }}\n}}\n{tail}",
            files = connections * 2 + 64,
        );
        let conf_path = dir.path().join("nginx.conf");
        fs::write(&conf_path, conf).expect("nginx.conf");
        let child = program("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let process = Killed(child);
        wait_for_port(port);
        Nginx {
            dir,
            port,
            pidfile,
            process,
        }
    }

    pub fn endpoint(&self) -> ::certkeeper::config::Endpoint {
        ::certkeeper::config::Endpoint {
            address: format!("127.0.0.1:{}", self.port),
            sni: ::certkeeper::names::DomainName::parse("media.example.com").expect("name"),
        }
    }
}
