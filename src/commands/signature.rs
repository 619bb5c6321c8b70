//! Signed requests: the operator's Ed25519 public key (`[commands] public_key_file`), read
//! once, and the check of a signature over a request body's bytes (`ring`). With a key,
//! nothing unsigned or badly signed runs.
//!
//! The key file may hold what an operator's tools write: the PEM public key
//! (`-----BEGIN PUBLIC KEY-----`, the SubjectPublicKeyInfo `openssl pkey -pubout` prints
//! for an `openssl genpkey -algorithm ed25519` key), the same DER in base64 on one line, the
//! 32 raw key bytes in base64 (`… -outform DER | tail -c 32 | base64`), or in hex. A private
//! key is refused with a hint, never used.

use crate::base64;
use ring::signature::{UnparsedPublicKey, ED25519};
use std::fmt;
use std::path::Path;

/// An Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

/// DER of an Ed25519 SubjectPublicKeyInfo up to the key (RFC 8410): SEQUENCE { SEQUENCE {
/// OID 1.3.101.112 }, BIT STRING (0 unused bits) }.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// A key file is a line or a PEM block; anything larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

impl PublicKey {
    /// The key in the file at `path`; the error says why not (never the file's content).
    pub fn from_file(path: &Path) -> Result<PublicKey, String> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(format!("{}: too large for a key file", path.display()));
        }
        PublicKey::parse(&bytes).map_err(|why| format!("{}: {why}", path.display()))
    }

    /// The key in a key file's text (see the module's list of formats).
    pub fn parse(text: &[u8]) -> Result<PublicKey, String> {
        let text = text.trim_ascii();
        if text.starts_with(b"-----BEGIN") {
            return Self::from_pem(text);
        }
        let der = if text.len() == 64 && text.iter().all(u8::is_ascii_hexdigit) {
            hex_decode(text)
        } else {
            base64::decode(text)
        };
        let der = der.ok_or("neither PEM, base64 nor hex")?;
        Self::from_der_or_raw(&der)
    }

    fn from_pem(text: &[u8]) -> Result<PublicKey, String> {
        let text = std::str::from_utf8(text).map_err(|_| "PEM that is not text")?;
        let mut lines = text.lines().map(str::trim);
        let header = lines.next().unwrap_or_default();
        if header.contains("PRIVATE KEY") {
            return Err("a private key: give the public one \
                        (openssl pkey -in KEY -pubout -out commands.pub)"
                .into());
        }
        if header != "-----BEGIN PUBLIC KEY-----" {
            return Err(format!("{header}: expected -----BEGIN PUBLIC KEY-----"));
        }
        let body: String = lines.take_while(|l| !l.starts_with("-----END")).collect();
        let der = base64::decode(body.as_bytes()).ok_or("PEM whose body is not base64")?;
        Self::from_der_or_raw(&der)
    }

    fn from_der_or_raw(bytes: &[u8]) -> Result<PublicKey, String> {
        let raw = match bytes.len() {
            32 => bytes,
            44 if bytes.starts_with(&SPKI_PREFIX) => &bytes[SPKI_PREFIX.len()..],
            44 => return Err("a public key of another algorithm than Ed25519".into()),
            n => {
                return Err(format!(
                    "{n} bytes: an Ed25519 public key is 32 bytes (44 as DER)"
                ))
            }
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(raw);
        Ok(PublicKey(key))
    }

    /// Whether `sig` (64 bytes) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, sig)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", base64_prefix(&self.0))
    }
}

/// The first bytes of a key, for logs (enough to tell two keys apart).
fn base64_prefix(key: &[u8; 32]) -> String {
    base64::hex(&key[..4])
}

fn hex_decode(text: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16);
    text.chunks(2)
        .map(|pair| match pair {
            [a, b] => Some((digit(*a)? * 16 + digit(*b)?) as u8),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn pair() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    use crate::base64::encode as b64;

    #[test]
    fn every_format_of_the_same_key_reads_as_that_key() {
        let key = pair();
        let raw = key.public_key().as_ref().to_vec();
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&raw);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            b64(&der)
        );
        let expected = PublicKey::parse(b64(&raw).as_bytes()).unwrap();
        assert_eq!(expected.0.as_slice(), raw.as_slice());
        for text in [
            pem,
            b64(&der),
            format!("{}\n", b64(&raw)),
            base64::hex(&raw),
        ] {
            assert_eq!(
                PublicKey::parse(text.as_bytes()),
                Ok(expected.clone()),
                "{text}"
            );
        }
    }

    #[test]
    fn a_private_key_or_another_algorithm_is_refused_with_the_reason() {
        let private =
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        assert!(PublicKey::parse(private).unwrap_err().contains("-pubout"));
        let mut other = SPKI_PREFIX.to_vec();
        other[8] = 0x6e; // X25519: the same length, OID 1.3.101.110
        other.extend_from_slice(&[0; 32]);
        assert!(PublicKey::parse(b64(&other).as_bytes())
            .unwrap_err()
            .contains("another algorithm"));
        assert!(PublicKey::parse(b"not a key at all").is_err());
        assert!(PublicKey::parse(b64(&[1; 31]).as_bytes())
            .unwrap_err()
            .contains("31 bytes"));
    }

    #[test]
    fn only_the_key_s_own_signature_of_exactly_those_bytes_verifies() {
        let key = pair();
        let other = pair();
        let public = PublicKey::parse(b64(key.public_key().as_ref()).as_bytes()).unwrap();
        let body = br#"{"id":"r-1","cmd":"ping","expires":"2030-01-01T00:00:00Z"}"#;
        let sig = key.sign(body);
        assert!(public.verifies(body, sig.as_ref()));
        assert!(
            !public.verifies(b"{\"id\":\"r-2\"}", sig.as_ref()),
            "another body"
        );
        assert!(
            !public.verifies(body, other.sign(body).as_ref()),
            "another key"
        );
        assert!(
            !public.verifies(body, &sig.as_ref()[..63]),
            "a short signature"
        );
    }
}

#[cfg(test)]
mod openssl_recipe {
    use super::*;

    /// The README's recipe, run once with OpenSSL 3 (`openssl genpkey -algorithm ed25519`,
    /// `openssl pkey -pubout`, `openssl pkeyutl -sign -rawin | base64 -w0`): its key and
    /// signature verify here, and nothing else does.
    #[test]
    fn a_signature_made_by_the_readme_s_openssl_recipe_verifies() {
        let pem = b"-----BEGIN PUBLIC KEY-----\n\
            MCowBQYDK2VwAyEAh2WWUNte9sKSd5sqah6Kca2GDbrZrs8v9OtnlEhG9EA=\n\
            -----END PUBLIC KEY-----\n";
        let body = br#"{"id":"r-1","cmd":"ping","expires":"2026-12-07T10:00:00Z"}"#;
        let sig = base64::decode(
            b"HheGXorO8rgDTb6BV8Nrcx7Ky/qEqi6SK/JBzWndu1nrG4DhL3Q1vHLMLcO2jTWuPMm1qVXdjGlsJb8adEW8CA==",
        )
        .unwrap();
        let key = PublicKey::parse(pem).unwrap();
        assert!(key.verifies(body, &sig));
        assert!(!key.verifies(&body[1..], &sig));
    }
}
