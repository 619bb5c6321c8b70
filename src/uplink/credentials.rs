//! What the uplink presents to the broker besides its client id: the password (read from its
//! file, never shown in a log, a `Debug` or a panic) and the rustls client configuration
//! built once from the TLS files, so that every connection of the same settings resumes the
//! last TLS session. Nothing here opens a connection.

use crate::uplink::error::UplinkError;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A password: its `Debug` and `Display` never show it, so it cannot reach a log line or a
/// panic message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(text: impl Into<String>) -> Self {
        Password(text.into())
    }

    /// The password itself, for the CONNECT packet only.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The first line of `path` (a trailing newline is not part of the password). Errors
    /// name the file, never its contents.
    pub fn from_file(path: &Path) -> Result<Self, UplinkError> {
        use std::io::Read;
        // A password file is a line; a wrong path (a log, a device) must not be read whole.
        const MAX_BYTES: u64 = 64 * 1024;
        let fail = |why: String| UplinkError::TlsConfig {
            path: path.to_path_buf(),
            why,
        };
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        let mut text = String::new();
        file.take(MAX_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| fail(e.to_string()))?;
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(fail("the password file is empty".into()));
        }
        Ok(Password(line.to_owned()))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The rustls client configuration built once from the settings' TLS files. Reused by every
/// connection, so rustls' session cache lets a reconnect resume the last TLS session (no
/// certificate chain on the wire, one round trip less). Always equal in comparisons: what it
/// is made of is `TlsSettings` and `tls_files`.
#[derive(Clone, Default)]
pub struct TlsClient(Option<Arc<rustls::ClientConfig>>);

impl TlsClient {
    /// The configuration for `mqtts://`; none for `mqtt://`.
    pub fn new(config: Option<Arc<rustls::ClientConfig>>) -> Self {
        TlsClient(config)
    }

    pub fn config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.0.as_ref()
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "TlsClient(built)"
        } else {
            "TlsClient(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classified;

    #[test]
    fn a_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(Password::from_file(&path).unwrap().reveal(), "s3cret");
        std::fs::write(&path, "").unwrap();
        let e = Password::from_file(&path).unwrap_err();
        assert_eq!(e.code(), "MQTT_TLS_CONFIG");
    }
}
