//! Secrets at rest. What the store keeps that would let a reader of the database act as
//! cloakroom (the private signing keys) is sealed with a key-encryption key (KEK) that is not in
//! the database: a file or an environment variable. A dump, a backup or a read-only SQL
//! injection then yields nothing that signs a token.
//!
//! A key set holds one or more KEKs, each with an id; the first seals, every one opens. Each
//! sealed value carries the id of the KEK that sealed it, so a KEK is replaced without
//! downtime: put the new one first and keep the old one (every instance can then open both),
//! re-seal what is stored ([`crate::Auth::rekey`], `cloakroom keys rekey`), then drop the old.
//!
//! Sealed value: `cksealed1`, the KEK id's length (one byte) and id, a 96-bit random nonce, and
//! the ChaCha20-Poly1305 ciphertext and tag; the associated data binds it to where it is kept
//! (a signing key's `kid`), so a sealed value cannot be moved to another row.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

const MAGIC: &[u8] = b"cksealed1";

/// Why a sealed value could not be opened, or a key set not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value was sealed with a KEK that is not in the key set.
    #[error("sealed with key-encryption key {0:?}, which is not configured")]
    UnknownKek(String),
    /// The value is damaged, or was moved from where it was sealed, or the KEK is wrong.
    #[error("a sealed value does not open (damaged, moved, or the wrong key)")]
    Corrupt,
    /// The key set could not be read or made.
    #[error("{0}")]
    Keys(String),
}

struct Kek {
    id: String,
    key: LessSafeKey,
}

/// One or more key-encryption keys; the first seals.
pub struct KeySet {
    keys: Vec<Kek>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeySet").field("ids", &ids).finish()
    }
}

impl KeySet {
    /// Reads a key set: one key a line, `ID KEY` or just `KEY` (its id is then made from the
    /// key), each key 32 bytes in base64 or base64url; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, encoded) = match line.split_once(char::is_whitespace) {
                Some((id, key)) => (Some(id.trim()), key.trim()),
                None => (None, line),
            };
            let bytes = STANDARD
                .decode(encoded)
                .or_else(|_| URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')))
                .map_err(|_| SealError::Keys(format!("line {}: the key is not base64", n + 1)))?;
            if bytes.len() != 32 {
                return Err(SealError::Keys(format!(
                    "line {}: a key-encryption key is 32 bytes, this one {}",
                    n + 1,
                    bytes.len()
                )));
            }
            let id = match id {
                Some(id)
                    if !id.is_empty()
                        && id.len() <= 64
                        && id.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    id.to_string()
                }
                Some(_) => {
                    return Err(SealError::Keys(format!(
                        "line {}: an id is 1 to 64 visible characters",
                        n + 1
                    )))
                }
                None => URL_SAFE_NO_PAD.encode(&Sha256::digest(&bytes)[..6]),
            };
            if keys.iter().any(|k: &Kek| k.id == id) {
                return Err(SealError::Keys(format!("line {}: id {id:?} twice", n + 1)));
            }
            let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
                .map_err(|_| SealError::Keys("cannot use the key".into()))?;
            keys.push(Kek {
                id,
                key: LessSafeKey::new(key),
            });
        }
        if keys.is_empty() {
            return Err(SealError::Keys("no key-encryption key in it".into()));
        }
        Ok(Self { keys })
    }

    /// Reads the key set in the file at `path`.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SealError::Keys(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| SealError::Keys(format!("{}: {e}", path.display())))
    }

    /// Reads the file at `path`, or makes it with one fresh key (readable by its owner only)
    /// if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        if path.exists() {
            return Self::load(path);
        }
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| SealError::Keys("no randomness for a new key".into()))?;
        let text = format!(
            "# cloakroom's key-encryption keys: the first seals, all open. Back this file up\n\
             # apart from the database; without it the signing keys cannot be read.\n{}\n",
            STANDARD.encode(key)
        );
        write_private(path, text.as_bytes())
            .map_err(|e| SealError::Keys(format!("cannot create {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "key-encryption key created");
        Self::parse(&text)
    }

    /// The id of the KEK that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The id of the KEK a stored value was sealed with, or `None` if it is not sealed.
    pub fn sealed_with(value: &[u8]) -> Option<&str> {
        let rest = value.strip_prefix(MAGIC)?;
        let (&len, rest) = rest.split_first()?;
        std::str::from_utf8(rest.get(..len as usize)?).ok()
    }

    /// Seals `plain`, bound to `context` (where it is kept).
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Result<Vec<u8>, SealError> {
        let kek = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Keys("no randomness for a nonce".into()))?;
        let mut buf = plain.to_vec();
        kek.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut buf,
            )
            .map_err(|_| SealError::Corrupt)?;
        let mut out = Vec::with_capacity(MAGIC.len() + 1 + kek.id.len() + NONCE_LEN + buf.len());
        out.extend_from_slice(MAGIC);
        out.push(kek.id.len() as u8);
        out.extend_from_slice(kek.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens a value sealed with any KEK of the set, bound to `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let id = Self::sealed_with(sealed).ok_or(SealError::Corrupt)?;
        let kek = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKek(id.to_string()))?;
        let body = &sealed[MAGIC.len() + 1 + id.len()..];
        let (nonce, ciphertext) = body.split_at_checked(NONCE_LEN).ok_or(SealError::Corrupt)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Corrupt)?;
        let mut buf = ciphertext.to_vec();
        let plain = kek
            .key
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| SealError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

/// Reads a value as the store keeps it: opened with `keys` if it was sealed, as it is if it is
/// in clear (kept before sealing was configured).
pub fn open_stored(
    keys: Option<&KeySet>,
    context: &[u8],
    stored: &[u8],
) -> Result<Vec<u8>, SealError> {
    match (KeySet::sealed_with(stored), keys) {
        (None, _) => Ok(stored.to_vec()),
        (Some(_), Some(keys)) => keys.open(context, stored),
        (Some(id), None) => Err(SealError::UnknownKek(id.to_string())),
    }
}

/// A value as the store should keep it: sealed with the current KEK when there are keys.
pub fn seal_stored(
    keys: Option<&KeySet>,
    context: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, SealError> {
    match keys {
        Some(keys) => keys.seal(context, plain),
        None => Ok(plain.to_vec()),
    }
}

/// Whether a stored value should be sealed again with `keys`' current KEK: it is in clear or,
/// when `all`, sealed with another KEK.
pub fn needs_resealing(keys: &KeySet, stored: &[u8], all: bool) -> bool {
    match KeySet::sealed_with(stored) {
        None => true,
        Some(id) => all && id != keys.current_id(),
    }
}

/// Writes a new file that only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        let mut k = [0u8; 32];
        let _ = SystemRandom::new().fill(&mut k);
        STANDARD.encode(k)
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() -> Result<(), SealError> {
        let old = KeySet::parse(&format!("old {}", key()))?;
        let sealed = old.seal(b"kid-1", b"private key")?;
        assert_eq!(KeySet::sealed_with(&sealed), Some("old"));
        assert!(!sealed.windows(11).any(|w| w == b"private key"));
        assert_eq!(old.open(b"kid-1", &sealed)?, b"private key");
        assert_eq!(old.open(b"kid-2", &sealed), Err(SealError::Corrupt));
        let mut flipped = sealed.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert_eq!(old.open(b"kid-1", &flipped), Err(SealError::Corrupt));
        let other = KeySet::parse(&key())?;
        assert_eq!(
            other.open(b"kid-1", &sealed),
            Err(SealError::UnknownKek("old".into()))
        );
        assert_eq!(KeySet::sealed_with(b"\x30\x82clear pkcs8"), None);
        Ok(())
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() -> Result<(), SealError> {
        let (a, b) = (key(), key());
        let before = KeySet::parse(&format!("a {a}"))?;
        let sealed = before.seal(b"k", b"v")?;
        let both = KeySet::parse(&format!("# rotating\nb {b}\n\na {a}\n"))?;
        assert_eq!(both.current_id(), "b");
        assert_eq!(both.open(b"k", &sealed)?, b"v");
        assert_eq!(KeySet::sealed_with(&both.seal(b"k", b"v")?), Some("b"));
        Ok(())
    }

    #[test]
    fn bad_key_sets_are_refused_with_a_reason() {
        for bad in [
            String::new(),
            "# only a comment".into(),
            "not base64!".into(),
            STANDARD.encode([7u8; 16]),
            format!("a {}\na {}", key(), key()),
        ] {
            assert!(KeySet::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_created_key_file_is_private_and_read_back() -> Result<(), SealError> {
        let dir = tempfile::tempdir().map_err(|e| SealError::Keys(e.to_string()))?;
        let path = dir.path().join("secrets.key");
        let made = KeySet::load_or_create(&path)?;
        let again = KeySet::load_or_create(&path)?;
        assert_eq!(made.current_id(), again.current_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map_err(|e| SealError::Keys(e.to_string()))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        Ok(())
    }
}
