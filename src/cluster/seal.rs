//! Private keys travel through etcd sealed: AES-256-GCM under a key derived (HKDF-SHA256)
//! from the cluster secret, a fresh random nonce each time, and the certificate's name and
//! serial as associated data, so that a sealed key cannot be passed off as another
//! certificate's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "a private key from the cluster cannot be opened: it was sealed with another cluster \
         secret, or altered; give every node the same cluster.secret_file"
    )]
    Open,
    #[error("cannot seal a private key: {0}")]
    Seal(&'static str),
}

pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl Sealer {
    pub fn new(secret: &[u8]) -> Self {
        let prk = Salt::new(HKDF_SHA256, b"certkeeper cluster v1").extract(secret);
        let okm = prk
            .expand(&[b"private keys"], &AES_256_GCM)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Sealer {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            random: SystemRandom::new(),
        }
    }

    /// `plaintext` sealed for `context`, as base64 of nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SealError::Seal("no randomness"))?;
        let mut sealed = zeroize::Zeroizing::new(plaintext.to_vec());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut *sealed,
            )
            .map_err(|_| SealError::Seal("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(B64.encode(out))
    }

    /// The plaintext of `sealed`, if it was sealed for `context` under the same secret.
    pub fn open(
        &self,
        sealed: &str,
        context: &str,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError> {
        let bytes = B64.decode(sealed).map_err(|_| SealError::Open)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buffer = zeroize::Zeroizing::new(ciphertext.to_vec());
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| SealError::Open)?;
        Ok(zeroize::Zeroizing::new(plaintext.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_same_secret_and_context() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let sealed = sealer
            .seal(b"-----BEGIN PRIVATE KEY-----", "media/01")
            .unwrap();
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(
            &*sealer.open(&sealed, "media/01").unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert!(sealer.open(&sealed, "other/01").is_err());
        let other = Sealer::new(b"another secret of thirty-two bytes!!");
        assert!(other.open(&sealed, "media/01").is_err());
        // A fresh nonce each time.
        assert_ne!(
            sealed,
            sealer
                .seal(b"-----BEGIN PRIVATE KEY-----", "media/01")
                .unwrap()
        );
    }
}
