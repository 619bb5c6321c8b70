//! The uplink's failures, each with a stable code and a class that decides what the
//! publisher does: transient ones are retried with backoff, permanent ones are retried
//! slowly (or dead-lettered, for a message the broker will never take), never in a tight loop.
//!
//! rumqttc reports everything as one `ConnectionError`; [`UplinkError::from_connection`]
//! sorts it by what an operator can do about it. This module never retries or logs by itself.

use crate::error::{Classified, ErrorClass};
use rumqttc::{ConnectReturnCode, ConnectionError, StateError};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Where the connection was when rumqttc reported the error: an I/O error while connecting
/// means the broker could not be reached (refused, DNS, no route), one on an established
/// link means it broke (reset, closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Connected,
}

#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// The broker could not be reached: refused, no route, DNS failure.
    #[error("cannot connect to broker {broker}: {source}")]
    Connect { broker: String, source: io::Error },

    /// An established link broke: reset, closed by the peer, write failed.
    #[error("link to broker {broker} broke: {source}")]
    Io { broker: String, source: io::Error },

    /// The link stalled: connect, flush or ping answer did not come in time.
    #[error("broker {broker} did not answer in time ({during})")]
    Timeout {
        broker: String,
        during: &'static str,
    },

    /// CONNACK said bad user name/password or not authorized: retrying soon will not help.
    #[error("broker {broker} refused the device's credentials ({code:?})")]
    Auth {
        broker: String,
        code: ConnectReturnCode,
    },

    /// CONNACK refused protocol version or client id: a configuration problem.
    #[error("broker {broker} refused the connection ({code:?})")]
    Refused {
        broker: String,
        code: ConnectReturnCode,
    },

    /// CONNACK said the server is unavailable: it may come back.
    #[error("broker {broker} is unavailable")]
    Unavailable { broker: String },

    /// A message is larger than the broker (or our own limit) will ever take.
    #[error("message of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge { bytes: usize, max: usize },

    /// No PUBACK within the timeout: the link is treated as broken. `pkid` is `None` when
    /// rumqttc had not even put the message on the wire.
    #[error("no PUBACK for packet {pkid:?} within {waited:?}")]
    AckTimeout { pkid: Option<u16>, waited: Duration },

    /// rumqttc's packet ids did not line up with what was submitted (an ack for a packet
    /// never sent, an id reused while in flight). The link is dropped and everything in
    /// flight is released, so nothing is acknowledged on a guess.
    #[error("packet id bookkeeping mismatch: {detail} (packet {pkid})")]
    AckMismatch { detail: &'static str, pkid: u16 },

    /// The broker or the client broke the protocol (unexpected packet, unsolicited ack).
    #[error("MQTT protocol error with broker {broker}: {detail}")]
    Protocol { broker: String, detail: String },

    /// The rumqttc client handle or event loop is gone (shutdown, or a bug).
    #[error("MQTT client closed")]
    ClientClosed,

    /// The broker URL in the config cannot be used.
    #[error("broker URL {url:?}: {why}")]
    BadUrl { url: String, why: String },

    /// A CA, client certificate, key or password file cannot be read or holds nothing usable:
    /// a deployment problem that retrying will not fix.
    #[error("TLS/credential file {}: {why}", .path.display())]
    TlsConfig { path: PathBuf, why: String },

    /// The TLS handshake with the broker failed. `permanent` when the certificates
    /// themselves are the problem (unknown CA, wrong name, expired, our certificate refused),
    /// not the network.
    #[error("TLS with broker {broker} failed: {detail}")]
    Tls {
        broker: String,
        detail: String,
        permanent: bool,
    },

    /// The broker dropped the link every time right after this message went out (over its
    /// size limit, or refused by its ACL): it will never take it.
    #[error(
        "broker dropped the link {disconnects} times in a row right after message of {bytes} bytes"
    )]
    Rejected { bytes: usize, disconnects: u32 },

    /// The broker dropped the link right after a message larger than any it had taken, the
    /// path to it still working: over its packet limit, which an MQTT 3.1.1 broker does not
    /// announce. Messages are capped at `cap` bytes from now on (`super::limit`).
    #[error(
        "broker dropped the link after a message of {bytes} bytes (over its packet limit); messages are capped at {cap} bytes now"
    )]
    BrokerLimit { bytes: usize, cap: usize },

    /// No PUBACK came while the path to the broker went down and came back: the connection
    /// is abandoned for a new one rather than left to TCP's growing retransmission timer.
    #[error("no PUBACK for {waited:?} while the path to the broker went down and came back")]
    Stalled { waited: Duration },

    /// A fix could not be encoded as JSON (a non-finite number slipped through validation).
    #[error("cannot encode fix seq {seq}: {source}")]
    Encode { seq: u64, source: serde_json::Error },
}

impl Classified for UplinkError {
    fn code(&self) -> &'static str {
        match self {
            UplinkError::Connect { .. } => "MQTT_CONNECT",
            UplinkError::Io { .. } => "MQTT_IO",
            UplinkError::Timeout { .. } => "MQTT_TIMEOUT",
            UplinkError::Auth { .. } => "MQTT_AUTH",
            UplinkError::Refused { .. } => "MQTT_REFUSED",
            UplinkError::Unavailable { .. } => "MQTT_UNAVAILABLE",
            UplinkError::TooLarge { .. } | UplinkError::BrokerLimit { .. } => "MQTT_TOO_LARGE",
            UplinkError::Stalled { .. } => "MQTT_STALLED",
            UplinkError::AckTimeout { .. } => "MQTT_ACK_TIMEOUT",
            UplinkError::AckMismatch { .. } => "MQTT_ACK_MISMATCH",
            UplinkError::Protocol { .. } => "MQTT_PROTOCOL",
            UplinkError::ClientClosed => "MQTT_CLIENT_CLOSED",
            UplinkError::Encode { .. } => "MQTT_ENCODE",
            UplinkError::BadUrl { .. } => "MQTT_URL",
            UplinkError::TlsConfig { .. } => "MQTT_TLS_CONFIG",
            UplinkError::Tls { .. } => "MQTT_TLS",
            UplinkError::Rejected { .. } => "MQTT_REJECTED",
        }
    }

    fn class(&self) -> ErrorClass {
        match self {
            UplinkError::Connect { .. }
            | UplinkError::Io { .. }
            | UplinkError::Timeout { .. }
            | UplinkError::Unavailable { .. }
            | UplinkError::AckTimeout { .. }
            | UplinkError::BrokerLimit { .. }
            | UplinkError::Stalled { .. }
            | UplinkError::AckMismatch { .. }
            | UplinkError::Protocol { .. }
            | UplinkError::ClientClosed => ErrorClass::Transient,
            UplinkError::Auth { .. }
            | UplinkError::Refused { .. }
            | UplinkError::TooLarge { .. }
            | UplinkError::Encode { .. }
            | UplinkError::BadUrl { .. }
            | UplinkError::TlsConfig { .. }
            | UplinkError::Rejected { .. } => ErrorClass::Permanent,
            UplinkError::Tls { permanent, .. } => {
                if *permanent {
                    ErrorClass::Permanent
                } else {
                    ErrorClass::Transient
                }
            }
        }
    }
}

impl UplinkError {
    /// Sort a rumqttc error by what can be done about it.
    pub fn from_connection(broker: &str, phase: Phase, err: ConnectionError) -> UplinkError {
        let broker = broker.to_owned();
        match err {
            ConnectionError::Io(source) => io_error(broker, phase, source),
            ConnectionError::NetworkTimeout => UplinkError::Timeout {
                broker,
                during: "connect",
            },
            ConnectionError::FlushTimeout => UplinkError::Timeout {
                broker,
                during: "flush",
            },
            ConnectionError::ConnectionRefused(code) => match code {
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
                    UplinkError::Auth { broker, code }
                }
                ConnectReturnCode::ServiceUnavailable => UplinkError::Unavailable { broker },
                ConnectReturnCode::RefusedProtocolVersion
                | ConnectReturnCode::BadClientId
                | ConnectReturnCode::Success => UplinkError::Refused { broker, code },
            },
            ConnectionError::NotConnAck(packet) => UplinkError::Protocol {
                broker,
                detail: format!("expected CONNACK, got {packet:?}"),
            },
            ConnectionError::RequestsDone => UplinkError::ClientClosed,
            ConnectionError::MqttState(state) => from_state(broker, phase, state),
            ConnectionError::Tls(tls) => from_tls(broker, phase, tls),
        }
    }
}

fn io_error(broker: String, phase: Phase, source: io::Error) -> UplinkError {
    // tokio-rustls reports handshake failures and TLS alerts as I/O errors wrapping the
    // rustls error; with TLS 1.3 a refused client certificate only shows on the first read
    // after the handshake, i.e. while waiting for CONNACK or later.
    if let Some(tls) = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return UplinkError::Tls {
            broker,
            permanent: tls_error_is_permanent(tls),
            detail: tls.to_string(),
        };
    }
    match phase {
        Phase::Connecting => UplinkError::Connect { broker, source },
        Phase::Connected => UplinkError::Io { broker, source },
    }
}

fn from_tls(broker: String, phase: Phase, err: rumqttc::TlsError) -> UplinkError {
    use rumqttc::TlsError;
    match err {
        TlsError::Io(source) => io_error(broker, phase, source),
        TlsError::TLS(tls) => UplinkError::Tls {
            broker,
            permanent: tls_error_is_permanent(&tls),
            detail: tls.to_string(),
        },
        // Bad server name, unusable certificates or keys handed to rumqttc: configuration.
        other => UplinkError::Tls {
            broker,
            permanent: true,
            detail: other.to_string(),
        },
    }
}

/// Certificate problems (ours or the broker's) do not heal by retrying soon; a handshake
/// cut short by the network does.
fn tls_error_is_permanent(err: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    match err {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::NoCertificatesPresented
        | rustls::Error::UnsupportedNameType
        | rustls::Error::PeerIncompatible(_) => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
                | A::HandshakeFailure
                | A::ProtocolVersion
                | A::UnrecognisedName
        ),
        _ => false,
    }
}

fn from_state(broker: String, phase: Phase, state: StateError) -> UplinkError {
    use rumqttc::Error as Bytes;
    match state {
        StateError::Io(source) => io_error(broker, phase, source),
        // The codec wraps socket errors: a reset while reading arrives here.
        StateError::Deserialization(Bytes::Io(source)) => io_error(broker, phase, source),
        StateError::Deserialization(Bytes::OutgoingPacketTooLarge { pkt_size, max }) => {
            UplinkError::TooLarge {
                bytes: pkt_size,
                max,
            }
        }
        StateError::ConnectionAborted => io_error(
            broker,
            phase,
            io::Error::new(io::ErrorKind::ConnectionAborted, "closed by the broker"),
        ),
        StateError::AwaitPingResp => UplinkError::Timeout {
            broker,
            during: "ping",
        },
        StateError::CollisionTimeout => UplinkError::Timeout {
            broker,
            during: "packet id collision",
        },
        other => UplinkError::Protocol {
            broker,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "mqtt://broker:1883";

    fn classify(phase: Phase, err: ConnectionError) -> (&'static str, ErrorClass) {
        let e = UplinkError::from_connection(B, phase, err);
        (e.code(), e.class())
    }

    #[test]
    fn refused_and_dns_failures_while_connecting_are_transient_connect_errors() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            classify(Phase::Connecting, ConnectionError::Io(refused)),
            ("MQTT_CONNECT", ErrorClass::Transient)
        );
        let dns = io::Error::other("failed to lookup address information");
        assert_eq!(
            classify(Phase::Connecting, ConnectionError::Io(dns)),
            ("MQTT_CONNECT", ErrorClass::Transient)
        );
    }

    #[test]
    fn a_reset_on_an_established_link_is_a_transient_io_error() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(
            classify(Phase::Connected, ConnectionError::Io(reset)),
            ("MQTT_IO", ErrorClass::Transient)
        );
        let wrapped = StateError::Deserialization(rumqttc::Error::Io(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert_eq!(
            classify(Phase::Connected, ConnectionError::MqttState(wrapped)),
            ("MQTT_IO", ErrorClass::Transient)
        );
        assert_eq!(
            classify(
                Phase::Connected,
                ConnectionError::MqttState(StateError::ConnectionAborted)
            ),
            ("MQTT_IO", ErrorClass::Transient)
        );
    }

    #[test]
    fn stalls_are_transient_timeouts() {
        for err in [
            ConnectionError::NetworkTimeout,
            ConnectionError::FlushTimeout,
            ConnectionError::MqttState(StateError::AwaitPingResp),
        ] {
            assert_eq!(
                classify(Phase::Connected, err),
                ("MQTT_TIMEOUT", ErrorClass::Transient)
            );
        }
    }

    #[test]
    fn bad_credentials_and_not_authorized_are_permanent_auth_errors() {
        for code in [
            ConnectReturnCode::BadUserNamePassword,
            ConnectReturnCode::NotAuthorized,
        ] {
            assert_eq!(
                classify(Phase::Connecting, ConnectionError::ConnectionRefused(code)),
                ("MQTT_AUTH", ErrorClass::Permanent)
            );
        }
    }

    #[test]
    fn an_unavailable_server_is_transient_but_a_bad_client_id_is_permanent() {
        assert_eq!(
            classify(
                Phase::Connecting,
                ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable)
            ),
            ("MQTT_UNAVAILABLE", ErrorClass::Transient)
        );
        assert_eq!(
            classify(
                Phase::Connecting,
                ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId)
            ),
            ("MQTT_REFUSED", ErrorClass::Permanent)
        );
    }

    #[test]
    fn an_oversized_outgoing_packet_is_permanent_too_large() {
        let err = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::OutgoingPacketTooLarge {
                pkt_size: 20_000,
                max: 10_240,
            },
        ));
        assert_eq!(
            classify(Phase::Connected, err),
            ("MQTT_TOO_LARGE", ErrorClass::Permanent)
        );
    }

    #[test]
    fn a_learned_broker_limit_is_too_large_but_transient_and_a_returned_path_is_stalled() {
        let e = UplinkError::BrokerLimit {
            bytes: 9_000,
            cap: 4_500,
        };
        assert_eq!(
            (e.code(), e.class()),
            ("MQTT_TOO_LARGE", ErrorClass::Transient)
        );
        let e = UplinkError::Stalled {
            waited: Duration::from_secs(9),
        };
        assert_eq!(
            (e.code(), e.class()),
            ("MQTT_STALLED", ErrorClass::Transient)
        );
    }

    #[test]
    fn a_puback_timeout_is_transient() {
        let e = UplinkError::AckTimeout {
            pkid: Some(3),
            waited: Duration::from_secs(30),
        };
        assert_eq!(
            (e.code(), e.class()),
            ("MQTT_ACK_TIMEOUT", ErrorClass::Transient)
        );
    }

    #[test]
    fn certificate_problems_in_the_handshake_are_permanent_tls_errors_but_a_cut_one_is_not() {
        let unknown_ca = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, unknown_ca);
        assert_eq!(
            classify(Phase::Connecting, ConnectionError::Io(wrapped)),
            ("MQTT_TLS", ErrorClass::Permanent)
        );
        // TLS 1.3: the broker refuses our certificate after the handshake, on the next read.
        let refused = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let wrapped = StateError::Io(io::Error::new(io::ErrorKind::InvalidData, refused));
        assert_eq!(
            classify(Phase::Connected, ConnectionError::MqttState(wrapped)),
            ("MQTT_TLS", ErrorClass::Permanent)
        );
        let cut = rustls::Error::AlertReceived(rustls::AlertDescription::InternalError);
        assert_eq!(
            classify(
                Phase::Connecting,
                ConnectionError::Tls(rumqttc::TlsError::TLS(cut))
            ),
            ("MQTT_TLS", ErrorClass::Transient)
        );
    }

    #[test]
    fn a_message_the_broker_keeps_dropping_the_link_over_is_permanent_rejected() {
        let e = UplinkError::Rejected {
            bytes: 300,
            disconnects: 3,
        };
        assert_eq!(
            (e.code(), e.class()),
            ("MQTT_REJECTED", ErrorClass::Permanent)
        );
    }

    #[test]
    fn messages_name_the_broker() {
        let e = UplinkError::from_connection(B, Phase::Connecting, ConnectionError::NetworkTimeout);
        assert!(e.to_string().contains(B), "{e}");
    }
}
