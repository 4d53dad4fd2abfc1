//! crypt(3)-compatible password hashes for `/etc/shadow`.
//!
//! - `$6$` sha512-crypt (the default) and `$5$` sha256-crypt come from RustCrypto's
//!   `sha-crypt`, 5000 rounds written the way glibc and libxcrypt write them
//!   (`$6$SALT$HASH`, no `rounds=` field; the hash is the same either way);
//! - `$y$` yescrypt comes from RustCrypto's `yescrypt` with libxcrypt's default parameters
//!   (`j9T`: N = 4096, r = 32, p = 1; what Debian 11+, Ubuntu 22.04+ and Fedora 35+ write);
//! - `$1$` md5-crypt is refused: no maintained crate offers it, and it is too weak to
//!   hand-roll for new passwords (see docs/decisions.md).
//!
//! Salts come from a [`SaltSource`]: the operating system's random generator, or a
//! generator seeded from the run's fixed timestamp (`SOURCE_DATE_EPOCH`/`--timestamp`) and
//! the user name, so that a reproducible run writes the same hash twice.

use crate::customize::PasswordCrypto;
use sha2::{Digest, Sha512};

/// Hashing failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The method is not available.
    #[error("password hashing method {0} is not supported (use sha512, sha256 or yescrypt)")]
    Unsupported(&'static str),
    /// The operating system's random generator failed.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
    /// The hashing crate refused its input.
    #[error("{method}: {message}")]
    Hash {
        /// Method name.
        method: &'static str,
        /// The crate's message.
        message: String,
    },
    /// The password cannot be stored in a shadow file.
    #[error("a password may not contain a newline or a NUL byte")]
    BadPassword,
}

/// The name of a method as `--password-crypto` spells it.
pub fn method_name(m: PasswordCrypto) -> &'static str {
    match m {
        PasswordCrypto::Md5 => "md5",
        PasswordCrypto::Sha256 => "sha256",
        PasswordCrypto::Sha512 => "sha512",
        PasswordCrypto::Yescrypt => "yescrypt",
    }
}

/// Where salt bytes come from.
#[derive(Debug, Clone)]
pub enum SaltSource {
    /// The operating system's random generator.
    Os,
    /// A deterministic generator (SHA-512 in counter mode over a seed).
    Seeded {
        /// The seed.
        seed: [u8; 64],
        /// Blocks drawn so far.
        counter: u64,
    },
}

impl SaltSource {
    /// A deterministic source for one run: the same `secs` and `label` (the user name, the
    /// option's position…) give the same salts.
    pub fn seeded(secs: i64, label: &str) -> Self {
        let mut h = Sha512::new();
        h.update(b"imgscrub password salt v1\0");
        h.update(secs.to_le_bytes());
        h.update(label.as_bytes());
        let mut seed = [0u8; 64];
        seed.copy_from_slice(&h.finalize());
        Self::Seeded { seed, counter: 0 }
    }

    /// Fill `out` with salt bytes.
    pub fn fill(&mut self, out: &mut [u8]) -> Result<(), CryptError> {
        match self {
            Self::Os => getrandom::fill(out).map_err(|e| CryptError::Random(e.to_string())),
            Self::Seeded { seed, counter } => {
                for chunk in out.chunks_mut(64) {
                    let mut h = Sha512::new();
                    h.update(&seed[..]);
                    h.update(counter.to_le_bytes());
                    *counter += 1;
                    let block = h.finalize();
                    for (o, b) in chunk.iter_mut().zip(block.iter()) {
                        *o = *b;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Hash `password` with `method` and a fresh salt from `salt`.
pub fn hash_password(
    method: PasswordCrypto,
    password: &str,
    salt: &mut SaltSource,
) -> Result<String, CryptError> {
    if password.contains(['\n', '\0']) {
        return Err(CryptError::BadPassword);
    }
    match method {
        PasswordCrypto::Md5 => Err(CryptError::Unsupported("md5")),
        PasswordCrypto::Sha256 | PasswordCrypto::Sha512 => {
            use sha_crypt::{PasswordHasher, ShaCrypt};
            // 12 bytes are the 16 salt characters glibc uses.
            let mut s = [0u8; 12];
            salt.fill(&mut s)?;
            let (hasher, name) = if method == PasswordCrypto::Sha256 {
                (ShaCrypt::SHA256, "sha256")
            } else {
                (ShaCrypt::SHA512, "sha512")
            };
            let h = hasher
                .hash_password_with_salt(password.as_bytes(), &s)
                .map_err(|e| CryptError::Hash {
                    method: name,
                    message: e.to_string(),
                })?;
            let h = h.to_string();
            // 5000 is the default number of rounds: glibc and libxcrypt leave it out, and
            // the hash does not depend on whether it is written.
            Ok(h.replacen("$rounds=5000$", "$", 1))
        }
        PasswordCrypto::Yescrypt => {
            use yescrypt::{PasswordHasher, Yescrypt};
            // 16 bytes: the 22 salt characters of libxcrypt's crypt_gensalt.
            let mut s = [0u8; 16];
            salt.fill(&mut s)?;
            let h = Yescrypt::default()
                .hash_password_with_salt(password.as_bytes(), &s)
                .map_err(|e| CryptError::Hash {
                    method: "yescrypt",
                    message: e.to_string(),
                })?;
            Ok(h.to_string())
        }
    }
}

/// A random password: 16 characters from `[A-Za-z0-9]` (about 95 bits), from the
/// operating system's generator (never seeded: a `random` password is not reproducible).
pub fn random_password() -> Result<String, CryptError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(16);
    let mut buf = [0u8; 64];
    while out.len() < 16 {
        getrandom::fill(&mut buf).map_err(|e| CryptError::Random(e.to_string()))?;
        for b in buf {
            // 248 = 4 * 62: rejecting the rest keeps every character equally likely.
            if b < 248
                && out.len() < 16
                && let Some(&c) = ALPHABET.get(usize::from(b) % ALPHABET.len())
            {
                out.push(char::from(c));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// python3's `crypt` module (libxcrypt) recomputes the hash from its own salt field.
    fn python_crypt(password: &str, hash: &str) -> Option<String> {
        let out = Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-c",
                "import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]))",
                password,
                hash,
            ])
            .output();
        match out {
            Ok(o) if o.status.success() => Some(String::from_utf8(o.stdout).unwrap().trim().into()),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "python3 with the crypt module is needed in CI"
                );
                eprintln!("skipping the python3 crypt oracle: python3 missing");
                None
            }
        }
    }

    fn openssl_passwd(flag: &str, password: &str, salt: &str) -> Option<String> {
        match Command::new("openssl")
            .args(["passwd", flag, "-salt", salt, password])
            .output()
        {
            Ok(o) if o.status.success() => Some(String::from_utf8(o.stdout).unwrap().trim().into()),
            _ => {
                assert!(std::env::var_os("CI").is_none(), "openssl is needed in CI");
                eprintln!("skipping the openssl oracle: openssl missing");
                None
            }
        }
    }

    #[test]
    fn sha_crypt_matches_libxcrypt_and_openssl() {
        for (m, prefix, flag) in [
            (PasswordCrypto::Sha512, "$6$", "-6"),
            (PasswordCrypto::Sha256, "$5$", "-5"),
        ] {
            for pw in ["secret", "", "pässwörd with spaces", "a:b$c\\d"] {
                let h = hash_password(m, pw, &mut SaltSource::Os).unwrap();
                assert!(h.starts_with(prefix), "{h}");
                assert!(!h.contains("rounds="), "{h}");
                let salt = h.split('$').nth(2).unwrap();
                assert_eq!(salt.len(), 16, "{h}");
                if let Some(p) = python_crypt(pw, &h) {
                    assert_eq!(p, h, "python crypt disagrees for {pw:?}");
                }
                // (openssl passwd cannot take an empty password on its command line.)
                if !pw.is_empty()
                    && let Some(o) = openssl_passwd(flag, pw, salt)
                {
                    assert_eq!(o, h, "openssl passwd disagrees for {pw:?}");
                }
                // And a wrong password does not verify.
                if let Some(p) = python_crypt("wrong", &h) {
                    assert_ne!(p, h);
                }
            }
        }
    }

    #[test]
    fn yescrypt_matches_libxcrypt() {
        for pw in ["secret", "correct horse battery staple"] {
            let h = hash_password(PasswordCrypto::Yescrypt, pw, &mut SaltSource::Os).unwrap();
            assert!(h.starts_with("$y$j9T$"), "{h}");
            if let Some(p) = python_crypt(pw, &h) {
                assert_eq!(p, h, "libxcrypt disagrees for {pw:?}");
            }
            if let Some(p) = python_crypt("Secret", &h) {
                assert_ne!(p, h);
            }
        }
    }

    #[test]
    fn seeded_salts_are_reproducible_and_distinct() {
        let a = hash_password(
            PasswordCrypto::Sha512,
            "pw",
            &mut SaltSource::seeded(1_700_000_000, "root"),
        )
        .unwrap();
        let b = hash_password(
            PasswordCrypto::Sha512,
            "pw",
            &mut SaltSource::seeded(1_700_000_000, "root"),
        )
        .unwrap();
        let c = hash_password(
            PasswordCrypto::Sha512,
            "pw",
            &mut SaltSource::seeded(1_700_000_000, "alice"),
        )
        .unwrap();
        let d = hash_password(
            PasswordCrypto::Sha512,
            "pw",
            &mut SaltSource::seeded(1_700_000_001, "root"),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        let mut s = SaltSource::seeded(1, "x");
        let (mut x, mut y) = ([0u8; 12], [0u8; 12]);
        s.fill(&mut x).unwrap();
        s.fill(&mut y).unwrap();
        assert_ne!(x, y, "successive draws differ");
    }

    #[test]
    fn md5_and_bad_passwords_are_refused() {
        let e = hash_password(PasswordCrypto::Md5, "pw", &mut SaltSource::Os).unwrap_err();
        assert!(e.to_string().contains("md5"), "{e}");
        assert!(hash_password(PasswordCrypto::Sha512, "a\nb", &mut SaltSource::Os).is_err());
    }

    #[test]
    fn random_passwords() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
