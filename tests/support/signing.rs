//! An operator's Ed25519 signing key for the commands tests: made with `ring`, its public
//! half written as the key file formats the agent reads, and requests signed as the README's
//! recipe signs them (the signature of the body's bytes, in base64).

use gps_agent::base64::encode as base64;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::path::{Path, PathBuf};

pub struct SigningKey(Ed25519KeyPair);

/// DER of an Ed25519 SubjectPublicKeyInfo before the 32 key bytes (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl SigningKey {
    pub fn generate() -> SigningKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        SigningKey(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    /// The public key as `openssl pkey -pubout` writes it.
    pub fn public_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(self.0.public_key().as_ref());
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64(&der)
        )
    }

    /// The raw 32 key bytes in base64, one line.
    pub fn public_base64(&self) -> String {
        base64(self.0.public_key().as_ref()) + "\n"
    }

    /// The PEM public key written to `dir/commands.pub`.
    pub fn write_public(&self, dir: &Path) -> PathBuf {
        let path = dir.join("commands.pub");
        std::fs::write(&path, self.public_pem()).unwrap();
        path
    }

    /// `{"body": body, "sig": base64(signature of body's bytes)}`.
    pub fn sign(&self, body: &str) -> String {
        let sig = self.0.sign(body.as_bytes());
        serde_json::json!({"body": body, "sig": base64(sig.as_ref())}).to_string()
    }
}
