//! The ticket file against a real rustls server in memory: a "restarted agent" (a new client
//! configuration from the same settings, as a new process builds it) resumes; other trust, a
//! bad file and a file open to others give a full handshake; only a handshake reads the file.

use super::super::{client_config_and_tickets, TlsSettings};
use super::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConnection, Connection, HandshakeKind, ServerConfig, ServerConnection};

#[path = "../../../../tests/support/certs.rs"]
#[allow(dead_code)]
mod certs;

/// A broker's TLS layer: one server configuration (its session cache) for every handshake.
fn server(pki: &certs::TestPki) -> Arc<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    Arc::new(config)
}

/// Move TLS records both ways until both sides are done and quiet (the tickets the server
/// sends after its handshake included); how the client's handshake went.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> HandshakeKind {
    let name = ServerName::try_from("localhost").unwrap();
    let mut c = Connection::from(ClientConnection::new(Arc::clone(client), name).unwrap());
    let mut s = Connection::from(ServerConnection::new(Arc::clone(server)).unwrap());
    for _ in 0..16 {
        fly(&mut c, &mut s);
        fly(&mut s, &mut c);
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            assert_eq!(c.handshake_kind(), s.handshake_kind());
            return c.handshake_kind().unwrap();
        }
    }
    panic!("the handshake did not finish");
}

/// What `from` has to send, read and processed by `to`.
fn fly(from: &mut Connection, to: &mut Connection) {
    let mut flight = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut flight).unwrap();
    }
    let mut rd = &flight[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
}

struct Rig {
    dir: tempfile::TempDir,
    pki: certs::TestPki,
    server: Arc<ServerConfig>,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let pki = certs::TestPki::create(dir.path());
        let server = server(&pki);
        Rig { dir, pki, server }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("buffer.db.tls-tickets")
    }

    /// The settings of an agent trusting the test CA, with its tickets beside its buffer.
    fn settings(&self) -> TlsSettings {
        TlsSettings {
            ca_file: Some(self.pki.ca.clone()),
            tickets: Some(self.file()),
            ..TlsSettings::default()
        }
    }

    /// An agent's process: its configuration as it builds it at start.
    fn start(&self, settings: &TlsSettings) -> (Arc<ClientConfig>, Arc<TicketStore>) {
        let (config, store) = client_config_and_tickets(settings).unwrap();
        (config, store.unwrap())
    }

    /// One connection of `agent`, its tickets then saved.
    fn connect(&self, agent: &(Arc<ClientConfig>, Arc<TicketStore>)) -> HandshakeKind {
        let kind = handshake(&agent.0, &self.server);
        agent.1.flush();
        kind
    }

    /// The first connection of a new agent process with `settings`.
    fn trip(&self, settings: &TlsSettings) -> HandshakeKind {
        self.connect(&self.start(settings))
    }

    /// The tickets the file holds.
    fn stored(&self) -> usize {
        let bytes = std::fs::read(self.file()).unwrap();
        parse(&bytes).unwrap().1.len()
    }
}

#[test]
fn a_restarted_agent_resumes_its_tls_session_from_the_file() {
    let rig = Rig::new();
    let first = rig.start(&rig.settings());
    assert_eq!(rig.connect(&first), HandshakeKind::Full);
    // rustls' server sends two tickets after a full handshake.
    assert_eq!(rig.stored(), 2);
    let mode = std::fs::metadata(rig.file()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(first);

    let second = rig.start(&rig.settings());
    assert_eq!(rig.connect(&second), HandshakeKind::Resumed);
    // One used (never twice), two new from the resumed session (rustls' server sends two
    // after every handshake; mosquitto's OpenSSL one after a resumed one).
    assert_eq!(rig.stored(), 3);
    assert_eq!(rig.connect(&second), HandshakeKind::Resumed);
}

#[test]
fn a_changed_ca_drops_the_stored_tickets() {
    let rig = Rig::new();
    assert_eq!(rig.trip(&rig.settings()), HandshakeKind::Full);
    assert_eq!(rig.stored(), 2);

    // The CA file replaced by a bundle with a second CA: other trust, the same broker.
    let bundle = rig.dir.path().join("bundle.pem");
    let text = std::fs::read_to_string(&rig.pki.ca).unwrap()
        + &std::fs::read_to_string(&rig.pki.other_ca).unwrap();
    std::fs::write(&bundle, text).unwrap();
    let renewed = TlsSettings {
        ca_file: Some(bundle),
        ..rig.settings()
    };
    let agent = rig.start(&renewed);
    assert_eq!(rig.connect(&agent), HandshakeKind::Full);
    // The file now holds only the tickets of the new trust: the old CA cannot use them.
    assert_eq!(rig.trip(&renewed), HandshakeKind::Resumed);
    assert_eq!(rig.trip(&rig.settings()), HandshakeKind::Full);
}

#[test]
fn a_changed_server_name_or_client_certificate_drops_the_stored_tickets() {
    let rig = Rig::new();
    let named = TlsSettings {
        server_name: Some("localhost".into()),
        ..rig.settings()
    };
    let mutual = TlsSettings {
        client_cert: Some(rig.pki.client_cert.clone()),
        client_key: Some(rig.pki.client_key.clone()),
        ..rig.settings()
    };
    assert_eq!(rig.trip(&rig.settings()), HandshakeKind::Full);
    assert_eq!(rig.trip(&named), HandshakeKind::Full);
    assert_eq!(rig.trip(&mutual), HandshakeKind::Full);
    assert_eq!(rig.trip(&mutual), HandshakeKind::Resumed);
}

#[test]
fn a_file_that_does_not_read_cleanly_gives_a_full_handshake_and_is_replaced() {
    let rig = Rig::new();
    assert_eq!(rig.trip(&rig.settings()), HandshakeKind::Full);
    let good = std::fs::read(rig.file()).unwrap();
    let cut = &good[..good.len() - 1];
    let mut foreign = good.clone();
    foreign[0] = b'X';
    let mut trailing = good.clone();
    trailing.push(0);
    for bad in [cut, &foreign[..], &trailing[..], b"".as_slice()] {
        std::fs::write(rig.file(), bad).unwrap();
        assert_eq!(rig.trip(&rig.settings()), HandshakeKind::Full);
        assert_eq!(rig.stored(), 2, "replaced by the new tickets");
    }
    let big = vec![0u8; MAX_FILE_BYTES + 1];
    std::fs::write(rig.file(), big).unwrap();
    assert_eq!(rig.trip(&rig.settings()), HandshakeKind::Full);
    assert_eq!(rig.stored(), 2);
}

#[test]
fn a_ticket_file_others_can_read_is_not_used() {
    let rig = Rig::new();
    assert_eq!(rig.trip(&rig.settings()), HandshakeKind::Full);
    std::fs::set_permissions(rig.file(), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(rig.trip(&rig.settings()), HandshakeKind::Full);
    let mode = std::fs::metadata(rig.file()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "written anew, owner-only");
}

#[test]
fn building_a_configuration_reads_and_writes_nothing() {
    let rig = Rig::new();
    std::fs::write(rig.file(), b"left as it is").unwrap();
    let agent = rig.start(&rig.settings());
    agent.1.flush();
    assert_eq!(std::fs::read(rig.file()).unwrap(), b"left as it is");
    assert!(agent.1.is_empty());
}

#[test]
fn the_store_keeps_at_most_its_bound_of_tickets() {
    let rig = Rig::new();
    let agent = rig.start(&rig.settings());
    // A broker that does not know the ticket offered (a fresh one each time): each handshake
    // uses one ticket and brings two.
    for _ in 0..10 {
        let server = server(&rig.pki);
        assert_eq!(handshake(&agent.0, &server), HandshakeKind::Full);
    }
    agent.1.flush();
    assert_eq!(agent.1.len(), MAX_TICKETS);
    assert_eq!(rig.stored(), MAX_TICKETS);
    assert!(std::fs::metadata(rig.file()).unwrap().len() <= MAX_FILE_BYTES as u64);
}

#[test]
fn the_store_shows_counts_never_tickets() {
    let rig = Rig::new();
    let agent = rig.start(&rig.settings());
    rig.connect(&agent);
    let shown = format!("{:?}", agent.1);
    assert_eq!(
        shown,
        format!("TicketStore {{ file: {:?}, tickets: 2, .. }}", rig.file())
    );
}
