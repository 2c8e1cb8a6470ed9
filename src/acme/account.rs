//! The ACME account: created on first use, its credentials stored 0600 in the state directory
//! (one file per CA directory URL), and reused from then on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};

use super::http::{AcmeHttp, Downloads};
use super::{AcmeError, EabKeyError};
use crate::config::AcmeConfig;
use crate::deploy::store::{FileMode, Store, write_atomic};

/// A ready-to-use account at one CA. Clones share the account, so that renewals running at
/// once register a replacement (when the CA forgot the account) only once between them.
#[derive(Clone)]
pub struct AcmeClient {
    account: Arc<RwLock<Account>>,
    /// Held while a replacement account is registered.
    replacing: Arc<tokio::sync::Mutex<()>>,
    directory: String,
    pub(super) config: AcmeConfig,
    path: PathBuf,
    /// Certificate downloads, kept when a chain is to be chosen (`acme.preferred_chain`).
    pub(super) downloads: Option<Downloads>,
    /// The HTTPS client the account speaks through (its connection pool), for the clock check.
    pub(super) http: AcmeHttp,
    /// This host's clock offset to the CA's, and when it was measured.
    pub(super) clock: Arc<std::sync::Mutex<Option<(std::time::Instant, i64)>>>,
}

impl AcmeClient {
    /// Loads the stored account for `directory`, or registers a new one and stores it.
    pub async fn connect(
        acme: &AcmeConfig,
        directory: &str,
        store: &Store,
    ) -> Result<Self, AcmeError> {
        let path = account_path(store.root(), directory);
        let downloads = acme.preferred_chain.as_ref().map(|_| Downloads::default());
        let shared = AcmeHttp::new(acme.extra_root.as_deref(), acme.request_timeout)?
            .keeping_downloads(downloads.clone());
        let http = || Ok::<_, AcmeError>(Box::new(shared.clone()));
        let unreachable = |source| AcmeError::Directory {
            directory: directory.to_string(),
            source,
        };
        let account = match std::fs::read(&path) {
            Ok(bytes) => {
                let credentials: AccountCredentials =
                    serde_json::from_slice(&bytes).map_err(|e| AcmeError::AccountFile {
                        path: path.clone(),
                        source: e.into(),
                    })?;
                Account::builder_with_http(http()?)
                    .from_credentials(credentials)
                    .await
                    .map_err(unreachable)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A CA may reject a nonce now and then (instant-acme already retries each
                // request three times): try the registration itself again, twice.
                let mut attempt = 1;
                loop {
                    match register(acme, directory, http()?, &path).await {
                        Err(e) if attempt < 3 && super::order::has_problem(&e, "badNonce") => {
                            attempt += 1
                        }
                        result => break result?,
                    }
                }
            }
            Err(e) => {
                return Err(AcmeError::AccountFile {
                    path,
                    source: e.into(),
                });
            }
        };
        Ok(Self {
            account: Arc::new(RwLock::new(account)),
            replacing: Arc::default(),
            directory: directory.to_string(),
            config: acme.clone(),
            path,
            downloads,
            http: shared,
            clock: Arc::default(),
        })
    }

    pub fn directory(&self) -> &str {
        &self.directory
    }

    /// The account's URL at the CA.
    pub fn id(&self) -> String {
        self.account().id().to_string()
    }

    /// Where the account's credentials are stored.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rolls the account key over (RFC 8555 §7.3.5): the CA is told the new key, signed with
    /// both, and the new credentials are stored 0600 at once. A marker file says a rollover is
    /// under way: should the process die between the CA's confirmation and the write, the old
    /// key is refused, and the marker lets the next run replace the account instead of failing.
    pub async fn rollover(&self) -> Result<(), AcmeError> {
        let _replacing = self.replacing.lock().await;
        let marker = rollover_marker(&self.path);
        write_atomic(&marker, b"a key rollover is under way\n", FileMode::PRIVATE)?;
        let mut account = self.account();
        let credentials = account
            .update_key()
            .await
            .map_err(super::failed("roll the account key over"))?;
        // serde_json cannot fail on this type; an empty file would be caught at the next load.
        let json = serde_json::to_vec(&credentials).unwrap_or_default();
        write_atomic(&self.path, &json, FileMode::PRIVATE)?;
        *self.account.write().unwrap_or_else(PoisonError::into_inner) = account;
        let _ = std::fs::remove_file(&marker);
        tracing::warn!(directory = %self.directory, id = %self.id(), "account key rolled over");
        Ok(())
    }

    /// Deactivates the account at the CA (RFC 8555 §7.3.6) and sets its credentials aside;
    /// the next order registers a new account.
    pub async fn deactivate(&self) -> Result<PathBuf, AcmeError> {
        let _replacing = self.replacing.lock().await;
        self.account()
            .deactivate()
            .await
            .map_err(super::failed("deactivate the account"))?;
        let aside = self.path.with_extension(format!(
            "deactivated.{}",
            crate::timefmt::stamp(std::time::SystemTime::now())
        ));
        std::fs::rename(&self.path, &aside).map_err(|e| AcmeError::AccountFile {
            path: self.path.clone(),
            source: e.into(),
        })?;
        tracing::warn!(directory = %self.directory, "account deactivated");
        Ok(aside)
    }

    /// Whether a key rollover was cut short (see [`AcmeClient::rollover`]).
    pub(super) fn rollover_interrupted(&self) -> bool {
        rollover_marker(&self.path).exists()
    }

    /// The account to use for the next requests.
    pub(super) fn account(&self) -> Account {
        self.account
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The CA no longer knows our account `stale` (a test CA restarted, a staging reset, an
    /// account deactivated elsewhere): keep the old credentials aside, register anew and carry
    /// on. When another renewal has replaced it meanwhile, use that one.
    pub(super) async fn replace_account(&self, stale: &Account) -> Result<(), AcmeError> {
        let _replacing = self.replacing.lock().await;
        if self.account().id() != stale.id() {
            return Ok(());
        }
        let aside = self.path.with_extension(format!(
            "unknown-to-ca.{}",
            crate::timefmt::stamp(std::time::SystemTime::now())
        ));
        std::fs::rename(&self.path, &aside).map_err(|e| AcmeError::AccountFile {
            path: self.path.clone(),
            source: e.into(),
        })?;
        tracing::warn!(
            directory = %self.directory,
            old = %aside.display(),
            "the CA does not know our account any more; registering a new one"
        );
        let http = Box::new(
            AcmeHttp::new(
                self.config.extra_root.as_deref(),
                self.config.request_timeout,
            )?
            .keeping_downloads(self.downloads.clone()),
        );
        let account = register(&self.config, &self.directory, http, &self.path).await?;
        *self.account.write().unwrap_or_else(PoisonError::into_inner) = account;
        let _ = std::fs::remove_file(rollover_marker(&self.path));
        Ok(())
    }
}

/// The accounts in use, one per CA, connected on first need and shared by every renewal.
#[derive(Clone, Default)]
pub struct Accounts(Arc<tokio::sync::Mutex<HashMap<String, AcmeClient>>>);

impl Accounts {
    /// The account at `ca`. Connecting is serialized, so renewals starting together register
    /// one account between them, not one each.
    pub async fn get(&self, ca: &AcmeConfig, store: &Store) -> Result<AcmeClient, AcmeError> {
        let mut clients = self.0.lock().await;
        if let Some(client) = clients.get(&ca.directory) {
            return Ok(client.clone());
        }
        let client = AcmeClient::connect(ca, &ca.directory, store).await?;
        clients.insert(ca.directory.clone(), client.clone());
        Ok(client)
    }

    /// Forgets the account at `directory` (deactivated): the next use connects afresh.
    pub async fn forget(&self, directory: &str) {
        self.0.lock().await.remove(directory);
    }
}

async fn register(
    acme: &AcmeConfig,
    directory: &str,
    http: Box<AcmeHttp>,
    path: &Path,
) -> Result<Account, AcmeError> {
    let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();
    let eab = match &acme.eab {
        None => None,
        Some(eab) => {
            let bad = |source: EabKeyError| AcmeError::EabKey {
                path: eab.hmac_key_file.clone(),
                source,
            };
            let text = std::fs::read_to_string(&eab.hmac_key_file).map_err(|e| bad(e.into()))?;
            let key =
                base64_url_decode(text.trim()).ok_or_else(|| bad(EabKeyError::NotBase64Url))?;
            Some(ExternalAccountKey::new(eab.key_id.clone(), &key))
        }
    };
    let new_account = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let created = Account::builder_with_http(http)
        .create(&new_account, directory.to_string(), eab.as_ref())
        .await;
    let (account, credentials) = match (created, &acme.eab) {
        (Ok(created), _) => created,
        // A CA that refuses the binding says so in its own words; ours say what to do. (A
        // rejected nonce, an overloaded or rate-limited CA are no verdict on the key.)
        (Err(source @ instant_acme::Error::Api(_)), Some(eab)) if !passing(&source) => {
            return Err(AcmeError::EabRefused {
                key_id: eab.key_id.clone(),
                source,
            });
        }
        (Err(e), _) => return Err(super::failed("create the ACME account")(e)),
    };
    // serde_json cannot fail on this type; an empty file would be caught at the next load.
    let json = serde_json::to_vec(&credentials).unwrap_or_default();
    if let Some(dir) = path.parent() {
        crate::deploy::store::create_dir(dir)?;
    }
    write_atomic(path, &json, FileMode::PRIVATE)?;
    tracing::info!(directory, id = account.id(), "created ACME account");
    Ok(account)
}

/// Whether a CA's problem says nothing of what was sent: worth another try as it is.
fn passing(error: &instant_acme::Error) -> bool {
    let instant_acme::Error::Api(problem) = error else {
        return false;
    };
    let kind = problem.r#type.as_deref().unwrap_or_default();
    ["badNonce", "serverInternal", "rateLimited"]
        .iter()
        .any(|passing| kind == format!("urn:ietf:params:acme:error:{passing}"))
}

/// Present while a key rollover is under way.
fn rollover_marker(account: &Path) -> PathBuf {
    account.with_extension("rollover")
}

/// `accounts/acme-v02.api.letsencrypt.org_directory.json`: readable, one file per CA.
pub fn account_path(state_dir: &Path, directory: &str) -> PathBuf {
    state_dir.join("accounts").join(format!(
        "{}.json",
        crate::deploy::store::directory_slug(directory)
    ))
}

/// EAB keys are handed out base64url-encoded (RFC 8555 §7.3.4); some CAs pad them.
fn base64_url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_file_is_named_after_the_directory() {
        let path = account_path(Path::new("/s"), "https://127.0.0.1:14000/dir");
        assert_eq!(path, Path::new("/s/accounts/127.0.0.1_14000_dir.json"));
    }

    #[test]
    fn decodes_base64url() {
        assert_eq!(base64_url_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_url_decode("aGVsbG8=").unwrap(), b"hello");
        assert!(base64_url_decode("a b").is_none());
    }
}
