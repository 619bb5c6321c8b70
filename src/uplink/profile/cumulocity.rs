//! Cumulocity's MQTT device contract (<https://cumulocity.com/docs/device-integration/mqtt/>)
//! with its SmartREST 2.0 static templates
//! (<https://cumulocity.com/docs/smartrest/mqtt-static-templates/>): client id `d:{device}`
//! (connection type `d`, the device id as its serial), user `{tenant}/{user}` with its
//! password, everything on `s/us`.
//!
//! Each fix is one `401` line, "create location update event"
//! (`401,latitude,longitude,altitude,accuracy,time`), with the fix's own receiver time, so a
//! backlog lands at the times it was driven; several lines a message, within the platform's
//! packet limit (16,184 bytes, below `max_message_bytes` when that is larger). The
//! accuracy field is left empty: HDOP is not a distance. The agent's state is a `400` event
//! (`400,gps_agent_status,online`), preceded at every connection by `100,{device},
//! c8y_GpsAgent`, which creates the device in the inventory the first time and does nothing
//! after. Cumulocity does not keep retained messages: the last will is the `offline` event.

use super::{Identity, Profile, Publish};
use crate::config::profile::CUMULOCITY_MAX_MESSAGE_BYTES;
use crate::config::ProfileName;
use crate::fix::{format_time_ms, Fix};
use crate::uplink::credentials::Password;
use crate::uplink::payload::{pack, Encoded, FixBatch, LinkState};
use std::io::Write;
use std::time::SystemTime;

/// Where a device sends SmartREST static templates.
pub const UPSTREAM: &str = "s/us";
/// The device type the `100` line gives a device it creates.
pub const DEVICE_TYPE: &str = "c8y_GpsAgent";
/// The type of the agent's state events.
pub const STATUS_EVENT: &str = "gps_agent_status";

#[derive(Debug)]
pub struct Cumulocity {
    device: String,
    credentials: Option<(String, Password)>,
}

impl Cumulocity {
    pub fn new(device: &str, credentials: Option<(String, Password)>) -> Self {
        Cumulocity {
            device: device.to_owned(),
            credentials,
        }
    }
}

/// `401,lat,lon,alt,,time` for `fix`.
fn location_line(out: &mut Vec<u8>, fix: &Fix) -> std::io::Result<()> {
    write!(out, "401,{},{},", fix.lat, fix.lon)?;
    if let Some(alt) = fix.alt_m {
        write!(out, "{alt}")?;
    }
    write!(out, ",,{}", format_time_ms(fix.time_ms))
}

/// A field of a SmartREST line: quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

impl Profile for Cumulocity {
    fn name(&self) -> ProfileName {
        ProfileName::Cumulocity
    }

    fn identity(&self, _now: SystemTime) -> Identity {
        Identity {
            client_id: format!("d:{}", self.device),
            credentials: self.credentials.clone(),
            renew_at: None,
        }
    }

    fn fixes_topic(&self) -> &str {
        UPSTREAM
    }

    fn encode(&self, batch: &FixBatch<'_>, max_message_bytes: usize) -> Encoded {
        let max = max_message_bytes.min(CUMULOCITY_MAX_MESSAGE_BYTES as usize);
        pack(batch.fixes, max, b"", b"\n", b"", |out, _, fix| {
            // Writing to a Vec cannot fail.
            let _ = location_line(out, fix);
            Ok(())
        })
    }

    fn status(&self, state: LinkState) -> Publish {
        let event = format!("400,{STATUS_EVENT},{}", state.as_str());
        let payload = match state {
            LinkState::Online => {
                format!("100,{},{DEVICE_TYPE}\n{event}", field(&self.device))
            }
            LinkState::Offline => event,
        };
        Publish {
            topic: UPSTREAM.to_owned(),
            payload: payload.into_bytes(),
            retain: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::payload::tests::fix;

    #[test]
    fn each_fix_is_a_401_line_at_its_own_time_several_a_message() {
        let c = Cumulocity::new("truck-042", None);
        let mut second = fix(1);
        second.alt_m = None;
        let fixes = vec![(1, fix(0)), (2, second)];
        let batch = FixBatch {
            device: "truck-042",
            stream: "s",
            fixes: &fixes,
        };
        let e = c.encode(&batch, 16_184);
        assert_eq!(e.messages.len(), 1);
        assert_eq!(e.messages[0].seqs, vec![1, 2]);
        assert_eq!(
            String::from_utf8(e.messages[0].payload.clone()).unwrap(),
            "401,41.574970205,-93.750558641,278.02,,2020-03-18T13:28:20.000Z\n\
             401,41.574970205,-93.750558641,,,2020-03-18T13:28:21.000Z"
        );
        // One line is 64 bytes: a limit of 100 takes one a message.
        let split = c.encode(&batch, 100);
        assert_eq!(split.messages.len(), 2);
        // The platform's limit holds whatever the configuration says.
        let many: Vec<(u64, Fix)> = (0..1000).map(|i| (i as u64 + 1, fix(i))).collect();
        let big = c.encode(
            &FixBatch {
                fixes: &many,
                ..batch
            },
            1 << 20,
        );
        assert!(big.messages.len() > 1);
        assert!(big.messages.iter().all(|m| m.payload.len() <= 16_184));
        assert_eq!(c.identity(SystemTime::UNIX_EPOCH).client_id, "d:truck-042");
        let online = c.status(LinkState::Online);
        assert_eq!(
            online.payload,
            b"100,truck-042,c8y_GpsAgent\n400,gps_agent_status,online"
        );
        assert_eq!(c.will().payload, b"400,gps_agent_status,offline");
        assert!(!online.retain);
        assert_eq!(field("a,b"), "\"a,b\"");
    }
}
