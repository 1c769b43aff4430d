//! SSH public keys in the `authorized_keys` form (`TYPE BASE64 [COMMENT]`): validated and
//! fingerprinted as OpenSSH does (`SHA256:` and the unpadded base64 of the SHA-256 of the key blob).
//!
//! Untrusted input (users paste it), so: no panics, bounded sizes, the blob's own type must match the
//! declared one, and the key material must have the shape its type demands.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

/// Longest key line accepted (an RSA-16384 key is about 2.8 KB in base64).
pub const MAX_KEY_LEN: usize = 16 * 1024;
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPublicKey {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ….
    pub key_type: String,
    /// The key blob, base64 as in the line.
    pub blob_base64: String,
    /// The comment after the key, if any (often `user@host`).
    pub comment: Option<String>,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// Key size in bits (the modulus for RSA, the curve for ECDSA, 256 for Ed25519).
    pub bits: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshKeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    #[error("unsupported key type {0:?}; use ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa or a security-key type")]
    UnsupportedType(String),
    #[error("the key data is not valid base64")]
    Base64,
    #[error("the key data is malformed: {0}")]
    Malformed(&'static str),
    #[error("the key data says it is {inner:?} but the line says {declared:?}")]
    TypeMismatch { declared: String, inner: String },
    #[error("RSA keys need at least {MIN_RSA_BITS} bits; this one has {0}")]
    RsaTooSmall(usize),
    #[error("this looks like a private key; paste the public key (the .pub file) instead")]
    PrivateKey,
}

const TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Reads SSH wire-format strings (`u32` big-endian length, then bytes).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Result<&'a [u8], SshKeyError> {
        let (len, rest) = self.0.split_first_chunk::<4>().ok_or(SshKeyError::Malformed("truncated length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(SshKeyError::Malformed("truncated field"));
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(value)
    }

    fn done(&self) -> Result<(), SshKeyError> {
        if self.0.is_empty() { Ok(()) } else { Err(SshKeyError::Malformed("trailing data")) }
    }
}

/// Parses and validates one public key line.
pub fn parse_ssh_public_key(line: &str) -> Result<SshPublicKey, SshKeyError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(SshKeyError::Empty);
    }
    if line.len() > MAX_KEY_LEN {
        return Err(SshKeyError::TooLong);
    }
    if line.starts_with("-----BEGIN") {
        return Err(SshKeyError::PrivateKey);
    }
    let mut parts = line.splitn(3, char::is_whitespace);
    let key_type = parts.next().unwrap_or_default();
    if !TYPES.contains(&key_type) {
        return Err(SshKeyError::UnsupportedType(key_type.chars().take(64).collect()));
    }
    let data = parts.next().ok_or(SshKeyError::Malformed("no key data after the type"))?;
    let comment = parts.next().map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned);
    let blob = STANDARD.decode(data).map_err(|_| SshKeyError::Base64)?;
    let mut r = Reader(&blob);
    let inner = r.string()?;
    if inner != key_type.as_bytes() {
        return Err(SshKeyError::TypeMismatch {
            declared: key_type.to_owned(),
            inner: String::from_utf8_lossy(inner).chars().take(64).collect(),
        });
    }
    let bits = match key_type {
        "ssh-ed25519" | "sk-ssh-ed25519@openssh.com" => {
            if r.string()?.len() != 32 {
                return Err(SshKeyError::Malformed("an Ed25519 key is 32 bytes"));
            }
            if key_type.starts_with("sk-") {
                r.string()?; // application
            }
            256
        }
        "ssh-rsa" => {
            let e = r.string()?;
            let n = r.string()?;
            if e.is_empty() || n.is_empty() {
                return Err(SshKeyError::Malformed("empty RSA parameter"));
            }
            let n = n.iter().position(|&b| b != 0).map_or(&[][..], |i| &n[i..]);
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if bits < MIN_RSA_BITS {
                return Err(SshKeyError::RsaTooSmall(bits));
            }
            bits
        }
        _ => {
            // ECDSA: the curve name, then the point (uncompressed: 0x04, X, Y).
            let curve = r.string()?;
            let (name, bits, point_len) = match curve {
                b"nistp256" => ("nistp256", 256, 65),
                b"nistp384" => ("nistp384", 384, 97),
                b"nistp521" => ("nistp521", 521, 133),
                _ => return Err(SshKeyError::Malformed("unknown ECDSA curve")),
            };
            if !key_type.contains(name) {
                return Err(SshKeyError::Malformed("the ECDSA curve does not match the key type"));
            }
            let point = r.string()?;
            if point.len() != point_len || point[0] != 4 {
                return Err(SshKeyError::Malformed("the ECDSA point has the wrong size"));
            }
            if key_type.starts_with("sk-") {
                r.string()?; // application
            }
            bits
        }
    };
    r.done()?;
    let fingerprint = format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&blob)));
    Ok(SshPublicKey { key_type: key_type.to_owned(), blob_base64: STANDARD.encode(&blob), comment, fingerprint, bits })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with ssh-keygen; the fingerprints are what `ssh-keygen -lf` printed for them.
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKl0UOwkXXh5iHy4+8ZqR/Yxx9yWeCgdeusVCeND979i test@example";
    const ED25519_FP: &str = "SHA256:q7J1glDquFVEA4N8oDWpxEJw4K0qlQBYtJxFdvznaKc";
    const ECDSA384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBHbBNm4dUxDLJidVhb9s1x3ppi87zw3KrH6XDZIoj4/zM84yICgSv5qlo7U+9QJI8RMx/pTJCMC9mxd3M/+9RQOLDxLV+6xxgA/croGf1qfzVOU/Wl3ci+7gt6pcaUExJw== ec";
    const ECDSA384_FP: &str = "SHA256:yR0y7KX4SfAOchljo9+y6flYiZTyvf4ViEACrYGBfhM";
    const RSA3072: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQCsMGk64Yib7jxxMTAOkOu0L5t97hzsWKdbz2cD8qfkDXr61arYTSPk2crGFXDNBPStYgJrHEYsZTCAo5FTAxVN1weHXnm2m+voZRl6Fbx4GjN3+EpQ9Wd6ugWYkmLNqNjT5OscX91Oz9ExuikNzvCvbdJS8Jhl67d04xBtC2c1F+TKIJwy7Aao+ehmS+aUjMXovp4mzs8r5QKwD6fEm36n40WYGBXGHggXAEKii1LFEhIJexIqXJ9iu/hHwQuL+XQgpOsam6b9fmcs33iRPCY6+Biw38ZI7VkivYgvEk2foRG/HsYayWYaGyd8PuFNlRzX3FdKHAfy3899rmTH3Sz7z4N89JzEIYKGYevdiJNpsyxxgyxB9z0B4fx7TmrwWXxk0EpuD5Fsu6oET/XbQFHdCGSFyPiQdkXMx5GzxI+msxWde7N8V7aMmfsrKLn6j9P8JZHldqxeYDT4LkDjboRbEflG+/SwMTNOSYh2aQHiS8WLxc+LpqxkCD1Ajzy9P6M= rsa@example";
    const RSA3072_FP: &str = "SHA256:a18bkBP0F+zV8pXpnBwI0zL84/c1E4XXjsHovjXIwVU";

    fn ed25519_blob(key: &[u8; 32]) -> String {
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(key);
        STANDARD.encode(blob)
    }

    #[test]
    fn ed25519_keys_parse_with_their_fingerprint() {
        let key = parse_ssh_public_key(ED25519).expect("valid");
        assert_eq!(key.key_type, "ssh-ed25519");
        assert_eq!(key.comment.as_deref(), Some("test@example"));
        assert_eq!(key.bits, 256);
        assert_eq!(key.fingerprint, ED25519_FP);
        let ec = parse_ssh_public_key(ECDSA384).expect("ecdsa");
        assert_eq!((ec.fingerprint.as_str(), ec.bits), (ECDSA384_FP, 384));
        let rsa = parse_ssh_public_key(RSA3072).expect("rsa");
        assert_eq!((rsa.fingerprint.as_str(), rsa.bits), (RSA3072_FP, 3072));
        let again = parse_ssh_public_key(&format!("  {}  ", ED25519.rsplit_once(' ').expect("comment").0)).expect("ok");
        assert_eq!((again.fingerprint, again.comment), (key.fingerprint, None));
    }

    #[test]
    fn bad_keys_say_why() {
        type Check = fn(&SshKeyError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            ("".into(), |e| matches!(e, SshKeyError::Empty)),
            ("ssh-dss AAAA".into(), |e| matches!(e, SshKeyError::UnsupportedType(_))),
            ("ssh-ed25519".into(), |e| matches!(e, SshKeyError::Malformed(_))),
            ("ssh-ed25519 !!!!".into(), |e| matches!(e, SshKeyError::Base64)),
            ("-----BEGIN OPENSSH PRIVATE KEY-----".into(), |e| matches!(e, SshKeyError::PrivateKey)),
            (format!("ssh-rsa {}", ed25519_blob(&[7; 32])), |e| matches!(e, SshKeyError::TypeMismatch { .. })),
            (format!("ssh-ed25519 {}AAAA", ed25519_blob(&[7; 32])), |e| matches!(e, SshKeyError::Malformed(_))),
            (format!("ssh-ed25519 {}", STANDARD.encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x10short")), |e| {
                matches!(e, SshKeyError::Malformed(_))
            }),
            ("ssh-ed25519 ".to_owned() + &"A".repeat(MAX_KEY_LEN), |e| matches!(e, SshKeyError::TooLong)),
        ];
        for (line, expected) in cases {
            let err = parse_ssh_public_key(&line).expect_err(&line);
            assert!(expected(&err), "{line:.60}: {err:?}");
        }
        assert!(parse_ssh_public_key(&format!("ssh-ed25519 {}", ed25519_blob(&[7; 32]))).is_ok());
    }

    #[test]
    fn small_rsa_keys_are_refused() {
        let mut blob = Vec::new();
        for field in [&b"ssh-rsa"[..], &[1, 0, 1], &[0x80; 128]] {
            blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
            blob.extend_from_slice(field);
        }
        let err = parse_ssh_public_key(&format!("ssh-rsa {}", STANDARD.encode(&blob))).expect_err("1024 bits");
        assert_eq!(err, SshKeyError::RsaTooSmall(1024));
    }
}
