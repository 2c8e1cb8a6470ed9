//! `[certificate.output]`: where copies of the certificate go, in which formats, with which
//! owner and mode.

use std::path::PathBuf;

use nix::unistd::{Group, User};
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Validator};

/// The files of a certificate set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Cert,
    Chain,
    Fullchain,
    Key,
    Combined,
    /// Only when a PKCS#12 password is configured.
    Pkcs12,
}

impl FileKind {
    /// Every kind a version directory may hold.
    pub const ALL: [FileKind; 6] = [
        FileKind::Cert,
        FileKind::Chain,
        FileKind::Fullchain,
        FileKind::Key,
        FileKind::Combined,
        FileKind::Pkcs12,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            FileKind::Cert => "cert.pem",
            FileKind::Chain => "chain.pem",
            FileKind::Fullchain => "fullchain.pem",
            FileKind::Key => "privkey.pem",
            FileKind::Combined => "combined.pem",
            FileKind::Pkcs12 => "keystore.p12",
        }
    }

    pub fn holds_key(self) -> bool {
        matches!(self, FileKind::Key | FileKind::Combined | FileKind::Pkcs12)
    }
}

/// Where copies of the current certificate go besides the state directory, and with which
/// ownership. Files holding the private key get `key_mode`; the others 0644.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// A directory certkeeper keeps as a symbolic link to `current`, so that it switches with
    /// it, as one set.
    pub link: Option<PathBuf>,
    /// Single files, each replaced atomically (and repaired at start after a crash).
    pub files: Vec<(FileKind, PathBuf)>,
    /// The PKCS#12 password, when a keystore is wanted (Java servers such as Wowza).
    pub pkcs12_password: Option<zeroize::Zeroizing<String>>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub key_mode: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    dir: Option<PathBuf>,
    cert: Option<PathBuf>,
    chain: Option<PathBuf>,
    fullchain: Option<PathBuf>,
    key: Option<PathBuf>,
    combined: Option<PathBuf>,
    pkcs12: Option<Spanned<PathBuf>>,
    pkcs12_password_file: Option<Spanned<PathBuf>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    key_mode: Option<Spanned<String>>,
}

impl RawOutput {
    /// Whether no file and no directory is named: the certificate then lives in the state
    /// directory alone.
    pub(super) fn names_nothing(&self) -> bool {
        [
            &self.dir,
            &self.cert,
            &self.chain,
            &self.fullchain,
            &self.key,
            &self.combined,
        ]
        .iter()
        .all(|p| p.is_none())
            && self.pkcs12.is_none()
    }
}

impl Validator<'_> {
    /// The uid or gid of `name` (`certificate.output.KEY`, a KIND of this host).
    fn system_id(
        &self,
        name: &Spanned<String>,
        key: &str,
        kind: &str,
        find: impl Fn(&str) -> Option<u32>,
    ) -> Result<u32, ConfigError> {
        find(name.get_ref()).ok_or_else(|| {
            self.located.error(
                name.span(),
                format!(
                    "certificate.output.{key}: no {kind} \"{}\" on this host; create it or write an existing {kind}",
                    name.get_ref()
                ),
            )
        })
    }

    pub(super) fn output(&self, raw: RawOutput) -> Result<Output, ConfigError> {
        let link = raw.dir.map(|dir| self.absolute(dir));
        let mut files = Vec::new();
        let single = [
            (FileKind::Cert, raw.cert),
            (FileKind::Chain, raw.chain),
            (FileKind::Fullchain, raw.fullchain),
            (FileKind::Key, raw.key),
            (FileKind::Combined, raw.combined),
            (
                FileKind::Pkcs12,
                raw.pkcs12.as_ref().map(|p| p.get_ref().clone()),
            ),
        ];
        for (kind, path) in single {
            if let Some(path) = path {
                files.push((kind, self.absolute(path)));
            }
        }
        let owner = raw
            .owner
            .map(|o| {
                self.system_id(&o, "owner", "user", |n| {
                    Some(User::from_name(n).ok()??.uid.as_raw())
                })
            })
            .transpose()?;
        let group = raw
            .group
            .map(|g| {
                self.system_id(&g, "group", "group", |n| {
                    Some(Group::from_name(n).ok()??.gid.as_raw())
                })
            })
            .transpose()?;
        let key_mode = match raw.key_mode {
            None => 0o600,
            Some(m) => u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8)
                .ok()
                .filter(|mode| mode & 0o007 == 0 && *mode <= 0o777)
                .ok_or_else(|| {
                    self.located.error(
                        m.span(),
                        "certificate.output.key_mode: write an octal mode with no access for others, \
                         such as \"0600\" or \"0640\"",
                    )
                })?,
        };
        let pkcs12_password = match raw.pkcs12_password_file {
            None => None,
            Some(path) => {
                let span = path.span();
                let path = self.secret_file(path, "certificate.output.pkcs12_password_file")?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.located.error(
                        span.clone(),
                        format!(
                            "certificate.output.pkcs12_password_file: cannot read {}: {e}",
                            path.display()
                        ),
                    )
                })?;
                let password = text.trim_end_matches(['\r', '\n']).to_string();
                if password.is_empty() {
                    return Err(self.located.error(span, "certificate.output.pkcs12_password_file: the file is empty; write the keystore password in it"));
                }
                Some(zeroize::Zeroizing::new(password))
            }
        };
        if let (None, Some(pkcs12)) = (&pkcs12_password, &raw.pkcs12) {
            return Err(self.located.error(
                pkcs12.span(),
                "certificate.output.pkcs12 needs pkcs12_password_file: a file holding the keystore password",
            ));
        }
        Ok(Output {
            link,
            files,
            pkcs12_password,
            owner,
            group,
            key_mode,
        })
    }
}
