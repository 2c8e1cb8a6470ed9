//! `[cluster]`: several certkeeper nodes sharing certificates through etcd.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};

/// The cluster secret must carry at least this many bytes (of a random string, say
/// `head -c 48 /dev/urandom | base64`).
pub(super) const SECRET_MIN_BYTES: usize = 32;

#[derive(Clone)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://` or `https://`), tried in order.
    pub endpoints: Vec<http::Uri>,
    /// This node's name, shown as the lease holder; the host name unless set.
    pub node: String,
    /// Every key certkeeper writes lives under this prefix.
    pub prefix: String,
    /// Encrypts private keys before they reach etcd.
    pub secret: zeroize::Zeroizing<Vec<u8>>,
    /// How long the renewal lease outlives its holder: another node takes over after this.
    pub lease: Duration,
    /// How often certificates published by other nodes are looked for.
    pub sync_interval: Duration,
    /// CA certificates to trust for `https://` endpoints (otherwise the public roots).
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key for etcd's `--client-cert-auth`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// etcd user and password (`--auth` enabled in etcd).
    pub auth: Option<(String, zeroize::Zeroizing<String>)>,
    /// Where the other nodes reach this node's port-80 listener to ask it for probes; found
    /// from `daemon.listen` (or the route toward etcd) unless set.
    pub probe_url: Option<String>,
}

impl ClusterConfig {
    /// Whether `other` says the same (secrets included).
    pub fn same_as(&self, other: &ClusterConfig) -> bool {
        self.endpoints == other.endpoints
            && self.node == other.node
            && self.prefix == other.prefix
            && *self.secret == *other.secret
            && self.lease == other.lease
            && self.sync_interval == other.sync_interval
            && self.ca_file == other.ca_file
            && self.client_cert == other.client_cert
            && self.auth.as_ref().map(|(u, p)| (u, p.as_str()))
                == other.auth.as_ref().map(|(u, p)| (u, p.as_str()))
            && self.probe_url == other.probe_url
    }
}

/// Secrets never reach a log, not even a debug one.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("endpoints", &self.endpoints)
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .field("sync_interval", &self.sync_interval)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("user", &self.auth.as_ref().map(|(user, _)| user))
            .field("probe_url", &self.probe_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    endpoints: Spanned<Vec<Spanned<String>>>,
    node: Option<String>,
    prefix: Option<Spanned<String>>,
    secret_file: Spanned<PathBuf>,
    #[serde(default = "default_lease")]
    lease_secs: Spanned<u64>,
    #[serde(default = "default_sync_interval")]
    sync_interval_secs: Spanned<u64>,
    ca_file: Option<Spanned<PathBuf>>,
    cert_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
    username: Option<String>,
    password_file: Option<Spanned<PathBuf>>,
    probe_url: Option<Spanned<String>>,
}

fn default_lease() -> Spanned<u64> {
    Spanned::new(0..0, 15)
}

fn default_sync_interval() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}

impl Validator<'_> {
    pub(super) fn cluster(
        &mut self,
        raw: Spanned<RawCluster>,
    ) -> Result<ClusterConfig, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let error = |span, message: &str| self.located.error(span, message.to_string());
        if raw.endpoints.get_ref().is_empty() {
            return Err(error(
                raw.endpoints.span(),
                "cluster.endpoints: list etcd's client URLs, such as [\"http://10.0.0.1:2379\"]",
            ));
        }
        let endpoints = raw
            .endpoints
            .into_inner()
            .into_iter()
            .map(|url| {
                let parsed = url.get_ref().trim_end_matches('/').parse::<http::Uri>();
                match parsed {
                    Ok(uri)
                        if matches!(uri.scheme_str(), Some("http" | "https"))
                            && uri.authority().is_some() =>
                    {
                        Ok(uri)
                    }
                    _ => Err(error(
                        url.span(),
                        "cluster.endpoints: write etcd client URLs such as \"https://10.0.0.1:2379\"",
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let node = match raw.node {
            Some(node) => node,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .ok_or_else(|| {
                    error(span.clone(), "cluster.node: this host has no name; set one")
                })?,
        };
        if node.is_empty() || node.len() > 253 || node.chars().any(char::is_control) {
            return Err(error(
                span,
                "cluster.node: write a short name for this node",
            ));
        }
        let prefix = match raw.prefix {
            None => "/certkeeper".to_string(),
            Some(p) if p.get_ref().starts_with('/') && p.get_ref().len() > 1 => {
                p.into_inner().trim_end_matches('/').to_string()
            }
            Some(p) => {
                return Err(error(
                    p.span(),
                    "cluster.prefix: write a key prefix such as \"/certkeeper\"",
                ));
            }
        };
        let secret_span = raw.secret_file.span();
        let secret_path = self.secret_file(raw.secret_file, "cluster.secret_file")?;
        let secret = read_secret(&secret_path).map_err(|why| {
            error(
                secret_span,
                &format!("cluster.secret_file: {}: {why}", secret_path.display()),
            )
        })?;
        if let Ok(meta) = std::fs::metadata(&secret_path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                self.warnings.push(format!(
                    "cluster.secret_file {} can be read by other users; it unseals every private \
                     key in etcd: chmod 600 it",
                    secret_path.display()
                ));
            }
        }
        let lease = *raw.lease_secs.get_ref();
        if !(3..=300).contains(&lease) {
            return Err(error(
                raw.lease_secs.span(),
                "cluster.lease_secs: write 3 to 300 (seconds until another node takes over)",
            ));
        }
        let sync_interval = *raw.sync_interval_secs.get_ref();
        if !(1..=3600).contains(&sync_interval) {
            return Err(error(
                raw.sync_interval_secs.span(),
                "cluster.sync_interval_secs: write 1 to 3600",
            ));
        }
        let file = |path: Option<Spanned<PathBuf>>, key: &str| {
            path.map(|p| self.existing_file(p, key)).transpose()
        };
        let ca_file = file(raw.ca_file, "cluster.ca_file")?;
        let client_cert = match (
            file(raw.cert_file, "cluster.cert_file")?,
            file(raw.key_file, "cluster.key_file")?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(error(
                    span,
                    "cluster: cert_file and key_file go together (etcd's client certificate)",
                ));
            }
        };
        let auth = match (raw.username, raw.password_file) {
            (Some(user), Some(path)) => {
                let password_span = path.span();
                let path = self.secret_file(path, "cluster.password_file")?;
                // An empty first line is a file not filled in yet: etcd has no empty passwords.
                let password = super::read_secret_line(&path).map_err(|e| {
                    error(
                        password_span,
                        &format!("cluster.password_file: {}: {e}", path.display()),
                    )
                })?;
                Some((user, password))
            }
            (None, None) => None,
            _ => {
                return Err(error(
                    span,
                    "cluster: username and password_file go together (etcd's user)",
                ));
            }
        };
        if auth.is_some() && endpoints.iter().any(|e| e.scheme_str() == Some("http")) {
            self.warnings.push(
                "cluster: the etcd password goes over plain http:// to some endpoints; use \
                 https:// endpoints"
                    .to_string(),
            );
        }
        let probe_url = raw
            .probe_url
            .map(|url| match url.get_ref().parse::<http::Uri>() {
                Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() && uri.path() == "/" => {
                    Ok(url.into_inner().trim_end_matches('/').to_string())
                }
                _ => Err(error(
                    url.span(),
                    "cluster.probe_url: write the http:// URL the other nodes reach this node's port-80 \
                     listener at, such as \"http://10.0.0.2:80\"",
                )),
            })
            .transpose()?;
        Ok(ClusterConfig {
            endpoints,
            node,
            prefix,
            secret,
            lease: Duration::from_secs(lease),
            sync_interval: Duration::from_secs(sync_interval),
            ca_file,
            client_cert,
            auth,
            probe_url,
        })
    }
}

fn read_secret(path: &std::path::Path) -> Result<zeroize::Zeroizing<Vec<u8>>, super::SecretError> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path)?);
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < SECRET_MIN_BYTES {
        return Err(super::SecretError::TooShort(trimmed.len()));
    }
    Ok(zeroize::Zeroizing::new(trimmed.to_vec()))
}
