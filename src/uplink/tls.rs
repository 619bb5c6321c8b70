//! TLS for `mqtts://`: builds the rustls client configuration from PEM files (the CA that
//! signs the broker, and for mutual TLS our certificate and key) and the optional server-name
//! override, with its session tickets kept in a file across restarts ([`tickets`]).
//!
//! Paths flow in from `[mqtt]`; an `Arc<rustls::ClientConfig>` flows out to rumqttc. The
//! files are read again for every connection, so a renewed certificate is picked up without a
//! restart (at the next reconnect, or at once on SIGHUP: see `app::run_uplink`). Failures are
//! `MQTT_TLS_CONFIG` (permanent) and name the file, never its contents: this module must never
//! log or return key material.

use crate::uplink::error::UplinkError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod tickets;

/// A certificate or key file larger than this is not a PEM file a broker setup would use;
/// refusing it keeps a wrong path (a log, a device) from being read without end.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// What `[mqtt]` says about TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificates (PEM) that sign the broker's certificate; the system's roots when
    /// `None`.
    pub ca_file: Option<PathBuf>,
    /// Our certificate chain and key (PEM) for mutual TLS; both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name the broker's certificate must carry, instead of the URL's host.
    pub server_name: Option<String>,
    /// Application protocols offered in the handshake (ALPN): AWS IoT Core on port 443
    /// wants `x-amzn-mqtt-ca`; empty offers none.
    pub alpn: Vec<Vec<u8>>,
    /// Where TLS 1.3 session tickets are kept across restarts (beside the buffer); in memory
    /// only when `None`.
    pub tickets: Option<PathBuf>,
}

fn config_error(path: &Path, why: impl Into<String>) -> UplinkError {
    UplinkError::TlsConfig {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// The PEM text of `path`, bounded in size.
fn read_pem(path: &Path) -> Result<Vec<u8>, UplinkError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| config_error(path, e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| config_error(path, e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(config_error(
            path,
            format!("larger than {MAX_PEM_BYTES} bytes: not a PEM file"),
        ));
    }
    Ok(bytes)
}

impl TlsSettings {
    /// A fingerprint of the contents of the CA, certificate and key files (not a secure
    /// hash: it only tells a reload whether a file was replaced under the same path, see
    /// `PublisherSettings::tls_files`). A file
    /// that cannot be read counts as its error, so it changing is noticed too.
    pub fn files_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for path in [&self.ca_file, &self.client_cert, &self.client_key]
            .into_iter()
            .flatten()
        {
            path.hash(&mut hasher);
            match read_pem(path) {
                Ok(bytes) => bytes.hash(&mut hasher),
                Err(e) => e.to_string().hash(&mut hasher),
            }
        }
        hasher.finish()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, UplinkError> {
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(config_error(path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, UplinkError> {
    let pem = read_pem(path)?;
    // The parse error would not show key bytes, but say only what kind of problem it is.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            config_error(path, "holds no PRIVATE KEY block")
        }
        _ => config_error(path, "bad PEM private key"),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build the client configuration: read and check every file now, so a missing or broken
/// one is reported before any connection attempt. With `tickets`, its session tickets are
/// kept in that file, bound to the CA certificates, the client certificate chain and the
/// server name (the file is first read at the first handshake, not here).
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, UplinkError> {
    client_config_and_tickets(settings).map(|(config, _)| config)
}

/// [`client_config`] and its ticket store (when `settings.tickets` names a file).
fn client_config_and_tickets(
    settings: &TlsSettings,
) -> Result<(Arc<ClientConfig>, Option<Arc<tickets::TicketStore>>), UplinkError> {
    let mut roots = RootCertStore::empty();
    // What the tickets' trust rests on, for their binding.
    let mut trusted: Vec<CertificateDer<'static>> = Vec::new();
    match &settings.ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots
                    .add(cert.clone())
                    .map_err(|e| config_error(path, format!("unusable CA certificate: {e}")))?;
                trusted.push(cert);
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store often holds a few certificates rustls cannot use; skip them
                // as every TLS client does.
                if roots.add(cert.clone()).is_ok() {
                    trusted.push(cert);
                }
            }
            if roots.is_empty() {
                return Err(config_error(
                    Path::new("(system certificate store)"),
                    "no CA certificates found; set mqtt.ca_file",
                ));
            }
        }
    }
    let roots = Arc::new(roots);
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(Path::new("(TLS provider)"), e.to_string()))?;
    let builder = match &settings.server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let expected = ServerName::try_from(name.clone()).map_err(|_| {
                config_error(
                    Path::new("(mqtt.server_name)"),
                    format!("{name:?} is not a DNS name or IP address"),
                )
            })?;
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| config_error(Path::new("(mqtt.ca_file)"), e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NameOverride { inner, expected }))
        }
    };
    let mut presented: Vec<CertificateDer<'static>> = Vec::new();
    let mut config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            presented.clone_from(&chain);
            let key_der = read_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| config_error(key, format!("does not fit the certificate: {e}")))?
        }
        (Some(path), None) | (None, Some(path)) => {
            return Err(config_error(
                path,
                "mutual TLS needs both client_cert and client_key",
            ))
        }
        (None, None) => builder.with_no_client_auth(),
    };
    config.alpn_protocols = settings.alpn.clone();
    let binding = settings.tickets.as_ref().and_then(|file| {
        let parts = (trusted.iter().map(|c| ("trusted", c.as_ref())))
            .chain(presented.iter().map(|c| ("presented", c.as_ref())))
            .chain(
                settings
                    .server_name
                    .iter()
                    .map(|n| ("server name", n.as_bytes())),
            );
        Some((file, tickets::Binding::of(parts)?))
    });
    let Some((file, binding)) = binding else {
        return Ok((Arc::new(config), None));
    };
    let store = Arc::new(tickets::TicketStore::new(file.clone(), binding));
    config.resumption = rustls::client::Resumption::store(store.clone());
    let config = Arc::new(config);
    store.bind(&config);
    Ok((config, Some(store)))
}

/// Checks the broker's certificate against `expected` instead of the URL's host, with the
/// full WebPKI verification otherwise (chain, validity, signatures).
///
/// rumqttc derives the TLS server name from the host it connects to; this is the only way to
/// reach a broker by IP address (or through a tunnel) and still insist on its real name. The
/// SNI extension on the wire still carries the URL's host (none for an IP address).
#[derive(Debug)]
struct NameOverride {
    inner: Arc<WebPkiServerVerifier>,
    expected: ServerName<'static>,
}

impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &self.expected,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classified;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_missing_ca_file_is_a_permanent_tls_config_error_naming_the_file() {
        let settings = TlsSettings {
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsSettings::default()
        };
        let e = client_config(&settings).unwrap_err();
        assert_eq!(e.code(), "MQTT_TLS_CONFIG");
        assert_eq!(e.class(), crate::error::ErrorClass::Permanent);
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write(&dir, "ca.pem", "not a certificate\n");
        let settings = TlsSettings {
            ca_file: Some(ca),
            ..TlsSettings::default()
        };
        let e = client_config(&settings).unwrap_err();
        assert_eq!(e.code(), "MQTT_TLS_CONFIG");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let ca_path = write(&dir, "ca.pem", &ca.cert.pem());
        let settings = TlsSettings {
            ca_file: Some(ca_path.clone()),
            client_cert: Some(ca_path),
            ..TlsSettings::default()
        };
        assert_eq!(
            client_config(&settings).unwrap_err().code(),
            "MQTT_TLS_CONFIG"
        );
    }

    #[test]
    fn a_key_file_without_a_key_is_refused_without_showing_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let ca_path = write(&dir, "ca.pem", &ca.cert.pem());
        let key_path = write(&dir, "key.pem", "secret-looking-text\n");
        let settings = TlsSettings {
            ca_file: Some(ca_path.clone()),
            client_cert: Some(ca_path),
            client_key: Some(key_path),
            ..TlsSettings::default()
        };
        let e = client_config(&settings).unwrap_err();
        assert_eq!(e.code(), "MQTT_TLS_CONFIG");
        assert!(!e.to_string().contains("secret-looking-text"), "{e}");
    }

    #[test]
    fn good_files_give_a_config_with_client_auth() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let ca_path = write(&dir, "ca.pem", &ca.cert.pem());
        let key_path = write(&dir, "key.pem", &ca.signing_key.serialize_pem());
        let settings = TlsSettings {
            ca_file: Some(ca_path.clone()),
            client_cert: Some(ca_path),
            client_key: Some(key_path),
            server_name: Some("broker.example".into()),
            alpn: vec![b"x-amzn-mqtt-ca".to_vec()],
            tickets: None,
        };
        let config = client_config(&settings).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        assert_eq!(config.alpn_protocols, vec![b"x-amzn-mqtt-ca".to_vec()]);
    }
}
