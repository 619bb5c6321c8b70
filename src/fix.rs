//! The one `Fix` type: a validated position as it flows from validation to the buffer and
//! out to the broker, and its JSON form (`../shared/spec/INTERFACE.md`, "A fix").

use chrono::DateTime;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// 2D or 3D, as the receiver reported it (GSA mode, or altitude present in GGA/GNS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FixMode {
    TwoD,
    ThreeD,
}

impl FixMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FixMode::TwoD => "2d",
            FixMode::ThreeD => "3d",
        }
    }

    /// Stable small integer for compact storage (2 or 3, as NMEA GSA says).
    pub fn as_u8(self) -> u8 {
        match self {
            FixMode::TwoD => 2,
            FixMode::ThreeD => 3,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            2 => Some(FixMode::TwoD),
            3 => Some(FixMode::ThreeD),
            _ => None,
        }
    }
}

/// What the vehicle did at a kept fix (adaptive reporting, `crate::report`): the fix JSON's
/// `event` key, the compact payload's `e` column, the buffer's `event` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The vehicle has come to rest (below `stop_speed_mps` for `stop_after_s`).
    Stop,
    /// The vehicle moves again.
    Start,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Stop => "stop",
            Event::Start => "start",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "stop" => Some(Event::Stop),
            "start" => Some(Event::Start),
            _ => None,
        }
    }

    /// The compact payload's and the buffer's integer: 1 stop, 2 start (0 is "none").
    pub fn as_u8(self) -> u8 {
        match self {
            Event::Stop => 1,
            Event::Start => 2,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Event::Stop),
            2 => Some(Event::Start),
            _ => None,
        }
    }
}

/// An accepted fix. Plain data, `Copy`, no heap: it travels through bounded queues and the
/// in-memory ring without allocating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// Receiver time, milliseconds since the Unix epoch, UTC. Never the host clock.
    pub time_ms: i64,
    /// WGS84 degrees, as precise as the sentence gave them.
    pub lat: f64,
    pub lon: f64,
    /// Altitude above mean sea level, metres.
    pub alt_m: Option<f64>,
    /// Speed over ground, metres per second.
    pub speed_mps: Option<f64>,
    /// Course over ground, degrees true.
    pub course_deg: Option<f64>,
    pub hdop: Option<f64>,
    /// Satellites used in the fix.
    pub sats: Option<u8>,
    pub mode: FixMode,
    /// Set on kept fixes by the report stage when the vehicle stops or starts; `None` for
    /// every fix as validation makes it.
    pub event: Option<Event>,
}

#[cfg(test)]
impl Fix {
    /// A 2D fix at `time_ms` with a position and nothing else, for the unit tests that only
    /// need fixes to tell apart.
    pub(crate) fn bare(time_ms: i64, lat: f64, lon: f64) -> Fix {
        Fix {
            time_ms,
            lat,
            lon,
            alt_m: None,
            speed_mps: None,
            course_deg: None,
            hdop: None,
            sats: None,
            mode: FixMode::TwoD,
            event: None,
        }
    }
}

/// A fix with its place in the output: the buffer's `seq` in payloads, the 0-based index of
/// accepted fixes in `parse` output.
#[derive(Debug, Clone, Copy)]
pub struct Numbered<'a> {
    pub seq: u64,
    pub fix: &'a Fix,
}

/// RFC 3339 UTC with milliseconds: `2020-03-18T13:28:20.600Z`.
pub fn format_time_ms(time_ms: i64) -> String {
    let mut buf = [0u8; RFC3339_MS_LEN];
    match write_time_ms(time_ms, &mut buf) {
        Some(text) => text.to_owned(),
        None => match DateTime::from_timestamp_millis(time_ms) {
            Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            // Out of chrono's range: cannot come from a validated fix; keep the value visible.
            None => format!("invalid-time-ms:{time_ms}"),
        },
    }
}

/// Length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub const RFC3339_MS_LEN: usize = 24;

/// Writes `time_ms` as RFC 3339 with milliseconds into `buf`, without allocating (it runs
/// once per fix in every payload). `None` outside the years 0000-9999.
pub fn write_time_ms(time_ms: i64, buf: &mut [u8; RFC3339_MS_LEN]) -> Option<&str> {
    let days = time_ms.div_euclid(86_400_000);
    let ms_of_day = time_ms.rem_euclid(86_400_000);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (sec, ms) = (rest / 1000, rest % 1000);
    let digits = |v: i64, n: usize, out: &mut [u8]| {
        let mut v = v;
        for i in (0..n).rev() {
            if let Some(b) = out.get_mut(i) {
                *b = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    };
    digits(year, 4, &mut buf[0..4]);
    buf[4] = b'-';
    digits(month, 2, &mut buf[5..7]);
    buf[7] = b'-';
    digits(day, 2, &mut buf[8..10]);
    buf[10] = b'T';
    digits(h, 2, &mut buf[11..13]);
    buf[13] = b':';
    digits(m, 2, &mut buf[14..16]);
    buf[16] = b':';
    digits(sec, 2, &mut buf[17..19]);
    buf[19] = b'.';
    digits(ms, 3, &mut buf[20..23]);
    buf[23] = b'Z';
    std::str::from_utf8(buf).ok()
}

/// Round a value that went through `f32` in the NMEA parser back to the decimals the receiver
/// sent, so `278.02` does not come out as `278.0199890136719`.
pub fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

impl Serialize for Numbered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.fix;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("seq", &self.seq)?;
        let mut buf = [0u8; RFC3339_MS_LEN];
        match write_time_ms(f.time_ms, &mut buf) {
            Some(text) => m.serialize_entry("time", text)?,
            None => m.serialize_entry("time", &format_time_ms(f.time_ms))?,
        }
        m.serialize_entry("lat", &f.lat)?;
        m.serialize_entry("lon", &f.lon)?;
        if let Some(v) = f.alt_m {
            m.serialize_entry("alt_m", &round_to(v, 3))?;
        }
        if let Some(v) = f.speed_mps {
            m.serialize_entry("speed_mps", &round_to(v, 3))?;
        }
        if let Some(v) = f.course_deg {
            m.serialize_entry("course_deg", &round_to(v, 3))?;
        }
        if let Some(v) = f.hdop {
            m.serialize_entry("hdop", &round_to(v, 2))?;
        }
        if let Some(v) = f.sats {
            m.serialize_entry("sats", &v)?;
        }
        m.serialize_entry("mode", f.mode.as_str())?;
        if let Some(e) = f.event {
            m.serialize_entry("event", e.as_str())?;
        }
        m.end()
    }
}

/// Reads back one fix of the JSON form above (`Numbered`'s output): the fix and its `seq`
/// when it has one. For dead letters being requeued and for `gps-agent decode` reading a v1
/// message; unknown keys are ignored, as the spec lets producers add keys.
pub fn fix_from_json(v: &serde_json::Value) -> Result<(Option<u64>, Fix), String> {
    use serde_json::Value;
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    let time = v.get("time").and_then(Value::as_str).ok_or("no time")?;
    let time_ms = DateTime::parse_from_rfc3339(time)
        .map_err(|e| format!("time {time:?}: {e}"))?
        .timestamp_millis();
    let mode = match v.get("mode").and_then(Value::as_str) {
        Some("3d") => FixMode::ThreeD,
        Some("2d") => FixMode::TwoD,
        other => return Err(format!("mode {other:?}")),
    };
    let event = match v.get("event") {
        None => None,
        Some(e) => Some(
            e.as_str()
                .and_then(Event::from_name)
                .ok_or_else(|| format!("event {e}"))?,
        ),
    };
    let fix = Fix {
        time_ms,
        lat: num("lat").ok_or("no lat")?,
        lon: num("lon").ok_or("no lon")?,
        alt_m: num("alt_m"),
        speed_mps: num("speed_mps"),
        course_deg: num("course_deg"),
        hdop: num("hdop"),
        sats: v
            .get("sats")
            .and_then(Value::as_u64)
            .and_then(|s| u8::try_from(s).ok()),
        mode,
        event,
    };
    Ok((v.get("seq").and_then(Value::as_u64), fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fix {
        Fix {
            time_ms: 1_584_538_100_600,
            lat: 41.574970205,
            lon: -93.750558641,
            alt_m: Some(278.02f32 as f64),
            speed_mps: Some(1.673),
            course_deg: None,
            hdop: Some(1.0),
            sats: Some(9),
            mode: FixMode::ThreeD,
            event: None,
        }
    }

    #[test]
    fn json_has_spec_keys_and_omits_unknown_optionals() {
        let fix = sample();
        let v: serde_json::Value = serde_json::to_value(Numbered { seq: 7, fix: &fix }).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["time"], "2020-03-18T13:28:20.600Z");
        assert_eq!(v["lat"], 41.574970205);
        assert_eq!(v["lon"], -93.750558641);
        assert_eq!(v["alt_m"], 278.02);
        assert_eq!(v["mode"], "3d");
        assert!(
            v.get("course_deg").is_none(),
            "unknown optional keys are omitted, not null"
        );
    }

    #[test]
    fn the_fast_time_writer_agrees_with_chrono_across_the_calendar() {
        // Leap days, century rules, year ends, the epoch, negative times, milliseconds.
        let mut t = -62_135_596_800_000i64; // 0001-01-01
        let step = 86_400_000 * 37 + 3_723_456; // 37 days, 1 h 2 min 3.456 s
        while t < 253_402_300_799_000 {
            let mut buf = [0u8; RFC3339_MS_LEN];
            let fast = write_time_ms(t, &mut buf).map(str::to_owned);
            let slow = DateTime::from_timestamp_millis(t)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(fast.as_deref(), Some(slow.as_str()), "at {t}");
            t += step;
        }
        for t in [0, -1, 951_782_400_000, 4_107_542_399_999, 1_584_538_100_600] {
            let mut buf = [0u8; RFC3339_MS_LEN];
            let slow = DateTime::from_timestamp_millis(t)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(write_time_ms(t, &mut buf), Some(slow.as_str()));
        }
        let mut buf = [0u8; RFC3339_MS_LEN];
        assert_eq!(
            write_time_ms(253_402_300_800_000, &mut buf),
            None,
            "year 10000"
        );
    }

    #[test]
    fn an_event_is_printed_only_when_there_is_one_and_reads_back() {
        let plain = sample();
        let v = serde_json::to_value(Numbered {
            seq: 1,
            fix: &plain,
        })
        .unwrap();
        assert!(v.get("event").is_none(), "no event: the key is omitted");
        for event in [Event::Stop, Event::Start] {
            let fix = Fix {
                event: Some(event),
                ..sample()
            };
            let v = serde_json::to_value(Numbered { seq: 9, fix: &fix }).unwrap();
            assert_eq!(v["event"], event.as_str());
            let (seq, back) = fix_from_json(&v).unwrap();
            assert_eq!(seq, Some(9));
            assert_eq!(back.event, Some(event));
            assert_eq!(back.time_ms, fix.time_ms);
            assert_eq!(Event::from_u8(event.as_u8()), Some(event));
        }
        let mut v = serde_json::to_value(Numbered {
            seq: 1,
            fix: &plain,
        })
        .unwrap();
        v["event"] = "parked".into();
        assert!(fix_from_json(&v).is_err(), "an unknown event is refused");
    }

    #[test]
    fn mode_round_trips_through_its_storage_integer() {
        for m in [FixMode::TwoD, FixMode::ThreeD] {
            assert_eq!(FixMode::from_u8(m.as_u8()), Some(m));
        }
        assert_eq!(FixMode::from_u8(1), None);
    }
}
