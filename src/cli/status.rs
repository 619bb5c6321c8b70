//! `gps-agent status [--url URL] [--watch]`: asks the local health endpoint how the agent is.
//!
//! In: the endpoint's base URL (`http://127.0.0.1:8470` by default; a trailing `/health` or
//! `/health/stream` is accepted too). Out: a one-screen summary of `GET /health` on stdout,
//! or with `--watch` one line per snapshot of `/health/stream` until interrupted; the exit
//! code says the status (0 healthy, 1 degraded, 2 unhealthy or unreachable). The request
//! goes through hyper's HTTP/1.1 client (the server's own crate); every read is bounded in
//! size and time so a wedged agent cannot wedge its own `status`.
//!
//! Which agent: `--url`, else the `[health] listen` of the configuration (`--config`,
//! `GPS_AGENT_CONFIG`, or `/etc/gps-agent/config.toml` when it exists), else the default
//! `127.0.0.1:8470`. An agent listening on every address (`0.0.0.0`) is asked on loopback.

use crate::error::{Classified, ErrorClass};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Exit codes of `status` (`../shared/spec/INTERFACE.md`, "Command line").
pub const EXIT_HEALTHY: i32 = 0;
pub const EXIT_DEGRADED: i32 = 1;
pub const EXIT_UNHEALTHY: i32 = 2;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// For one snapshot: the whole answer. For `--watch`: between two lines (the agent sends one
/// a second; ten seconds of silence means it is gone or wedged).
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 1024 * 1024;

/// The URL of the agent whose endpoint listens at `listen`: loopback for an agent that
/// listens on every address.
pub fn url_for(listen: SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// Why a status request failed. All of them mean "unreachable" (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("unsupported URL {url:?}: expected http://HOST:PORT")]
    Url { url: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("no answer from {addr} within {seconds} s")]
    Timeout { addr: String, seconds: u64 },
    #[error("unexpected answer from {addr}: {detail}")]
    Protocol { addr: String, detail: String },
}

impl Classified for StatusError {
    fn code(&self) -> &'static str {
        match self {
            StatusError::Url { .. } => "STATUS_URL",
            StatusError::Connect { .. } => "STATUS_CONNECT",
            StatusError::Timeout { .. } => "STATUS_TIMEOUT",
            StatusError::Protocol { .. } => "STATUS_PROTOCOL",
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            StatusError::Url { .. } | StatusError::Protocol { .. } => ErrorClass::Permanent,
            _ => ErrorClass::Transient,
        }
    }
}

/// Runs `status`: prints to stdout (errors to stderr) and returns the exit code.
pub fn run(url: &str, watch: bool) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gps-agent status: cannot start: {e}");
            return EXIT_UNHEALTHY;
        }
    };
    let mut out = std::io::stdout();
    runtime.block_on(async {
        if watch {
            watch_until(url, &mut out, tokio::signal::ctrl_c()).await
        } else {
            once(url, &mut out).await
        }
    })
}

/// One snapshot: summary to `out`, exit code from its `status`.
pub async fn once(url: &str, out: &mut dyn Write) -> i32 {
    match fetch_once(url).await {
        Ok(snapshot) => {
            let _ = out.write_all(summary(&snapshot).as_bytes());
            let _ = out.flush();
            exit_code(&snapshot)
        }
        Err(e) => {
            eprintln!("gps-agent status: {e}");
            EXIT_UNHEALTHY
        }
    }
}

/// Tails `/health/stream`, one line per snapshot, until `stop` completes (exit code of the
/// last snapshot) or the connection drops (2).
pub async fn watch_until(url: &str, out: &mut dyn Write, stop: impl Future) -> i32 {
    // Shared with the tail so the stop branch can read it while the tail is still borrowed.
    let last = std::cell::Cell::new(None);
    let tail = tail_stream(url, out, &last);
    tokio::pin!(tail);
    tokio::select! {
        result = &mut tail => {
            if let Err(e) = result {
                eprintln!("gps-agent status: {e}");
            } else {
                eprintln!("gps-agent status: the agent closed the stream");
            }
            EXIT_UNHEALTHY
        }
        _ = stop => last.get().unwrap_or(EXIT_UNHEALTHY),
    }
}

async fn tail_stream(
    url: &str,
    out: &mut dyn Write,
    last: &std::cell::Cell<Option<i32>>,
) -> Result<(), StatusError> {
    let target = Target::parse(url)?;
    let mut body = target.get("/health/stream").await?;
    if body.status != 200 {
        return Err(target.protocol(format!("HTTP {} from /health/stream", body.status)));
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next_chunk(&target).await? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(snapshot) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            last.set(Some(exit_code(&snapshot)));
            let _ = writeln!(out, "{}", watch_line(&snapshot));
            let _ = out.flush();
        }
        if pending.len() > MAX_BODY {
            return Err(target.protocol("stream line too long".into()));
        }
    }
    Ok(())
}

async fn fetch_once(url: &str) -> Result<Value, StatusError> {
    let target = Target::parse(url)?;
    let mut body = target.get("/health").await?;
    // 503 is a valid answer: the agent is up but not healthy, and says why.
    if body.status != 200 && body.status != 503 {
        return Err(target.protocol(format!("HTTP {} from /health", body.status)));
    }
    let mut all = Vec::new();
    while let Some(chunk) = body.next_chunk(&target).await? {
        all.extend_from_slice(&chunk);
        if all.len() > MAX_BODY {
            return Err(target.protocol("answer too large".into()));
        }
    }
    serde_json::from_slice(&all).map_err(|e| target.protocol(format!("not a snapshot: {e}")))
}

/// 0 healthy, 1 degraded, 2 unhealthy or anything unexpected.
pub fn exit_code(snapshot: &Value) -> i32 {
    match snapshot.get("status").and_then(Value::as_str) {
        Some("healthy") => EXIT_HEALTHY,
        Some("degraded") => EXIT_DEGRADED,
        _ => EXIT_UNHEALTHY,
    }
}

/// Where to ask: `host:port` and the path prefix before `/health`.
struct Target {
    authority: String,
    base: String,
}

impl Target {
    /// `http://host:port[/prefix][/health[/stream]]`, the scheme optional, port 80 when left
    /// out; parsed by hyper's `Uri`.
    fn parse(url: &str) -> Result<Self, StatusError> {
        let bad = || StatusError::Url {
            url: url.to_owned(),
        };
        let with_scheme = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(bad());
        }
        let authority = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let path = uri.path().trim_end_matches('/');
        let base = path
            .strip_suffix("/health/stream")
            .or_else(|| path.strip_suffix("/health"))
            .unwrap_or(path);
        Ok(Target {
            authority,
            base: base.to_owned(),
        })
    }

    fn protocol(&self, detail: String) -> StatusError {
        StatusError::Protocol {
            addr: self.authority.clone(),
            detail,
        }
    }

    fn timeout(&self) -> StatusError {
        StatusError::Timeout {
            addr: self.authority.clone(),
            seconds: READ_TIMEOUT.as_secs(),
        }
    }

    /// Sends `GET` and waits for the status line and headers.
    async fn get(&self, path: &str) -> Result<ResponseBody, StatusError> {
        let connect = TcpStream::connect(self.authority.as_str());
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(StatusError::Connect {
                    addr: self.authority.clone(),
                    source,
                })
            }
            Err(_) => return Err(self.timeout()),
        };
        let head = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| self.protocol(e.to_string()))?;
            // The connection is driven beside the request; it ends with the response.
            tokio::spawn(connection);
            let request = Request::get(format!("{}{path}", self.base))
                .header(hyper::header::HOST, self.authority.as_str())
                .header(hyper::header::USER_AGENT, "gps-agent-status")
                .header(hyper::header::ACCEPT, "application/json")
                .body(Empty::<Bytes>::new())
                .map_err(|e| self.protocol(e.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| self.protocol(e.to_string()))?;
            Ok(ResponseBody {
                status: response.status().as_u16(),
                body: response.into_body(),
            })
        };
        match tokio::time::timeout(READ_TIMEOUT, head).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout()),
        }
    }
}

struct ResponseBody {
    status: u16,
    body: hyper::body::Incoming,
}

impl ResponseBody {
    /// The next piece of the body, `None` at its end. Each read is bounded by
    /// [`READ_TIMEOUT`].
    async fn next_chunk(&mut self, target: &Target) -> Result<Option<Bytes>, StatusError> {
        loop {
            match tokio::time::timeout(READ_TIMEOUT, self.body.frame()).await {
                Err(_) => return Err(target.timeout()),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(target.protocol(e.to_string())),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing for us; read on.
                }
            }
        }
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("?")
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}

fn seconds_ago(v: &Value, path: &[&str]) -> Option<String> {
    at(v, path).and_then(Value::as_f64).map(human_duration)
}

fn human_duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let total = s as u64;
        let (h, m, sec) = (total / 3600, (total % 3600) / 60, total % 60);
        if h > 0 {
            format!("{h}h {m:02}m {sec:02}s")
        } else {
            format!("{m}m {sec:02}s")
        }
    }
}

fn number(v: &Value, path: &[&str]) -> String {
    at(v, path)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "?".into())
}

/// The one-screen summary of one snapshot.
pub fn summary(s: &Value) -> String {
    let mut out = String::new();
    let uptime = seconds_ago(s, &["uptime_s"]).unwrap_or_else(|| "?".into());
    out.push_str(&format!(
        "gps-agent {}: {}  (at {}, up {})\n",
        str_at(s, &["version"]),
        str_at(s, &["status"]).to_uppercase(),
        str_at(s, &["time"]),
        uptime
    ));

    let mut rejected: Vec<(String, u64)> = at(s, &["components", "gnss", "rejected"])
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| (k.clone(), n)))
                .collect()
        })
        .unwrap_or_default();
    rejected.sort_by_key(|r| std::cmp::Reverse(r.1));
    let total: u64 = rejected.iter().map(|(_, n)| n).sum();
    let reasons: Vec<String> = rejected.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let last_fix = seconds_ago(s, &["components", "gnss", "last_fix_age_s"])
        .map(|a| format!("last fix {a} ago"))
        .unwrap_or_else(|| "no fix yet".into());
    let rejected = if total == 0 {
        "none rejected".to_owned()
    } else {
        format!("{total} rejected ({})", reasons.join(", "))
    };
    out.push_str(&format!(
        "  gnss    {:<10} fix {}, {}, {}\n",
        str_at(s, &["components", "gnss", "status"]),
        str_at(s, &["components", "gnss", "fix"]),
        last_fix,
        rejected
    ));
    push_error(&mut out, s, "gnss");

    let oldest = seconds_ago(s, &["components", "buffer", "oldest_age_s"])
        .map(|a| format!(", oldest {a}"))
        .unwrap_or_default();
    let eta = seconds_ago(s, &["components", "buffer", "drain_eta_s"])
        .map(|a| format!(", drains in {a}"))
        .unwrap_or_else(|| ", not draining".into());
    out.push_str(&format!(
        "  buffer  {:<10} depth {}{}, acked seq {}{}, evicted {}, dead letters {}\n",
        str_at(s, &["components", "buffer", "status"]),
        number(s, &["components", "buffer", "depth"]),
        oldest,
        number(s, &["components", "buffer", "acked_seq"]),
        eta,
        number(s, &["components", "buffer", "evicted"]),
        number(s, &["components", "buffer", "dead_letters"]),
    ));
    push_error(&mut out, s, "buffer");

    let connected = match at(s, &["components", "mqtt", "connected"]).and_then(Value::as_bool) {
        Some(true) => "connected",
        Some(false) => "disconnected",
        None => "?",
    };
    let last_ack = seconds_ago(s, &["components", "mqtt", "last_ack_age_s"])
        .map(|a| format!("last ack {a} ago"))
        .unwrap_or_else(|| "no ack yet".into());
    out.push_str(&format!(
        "  mqtt    {:<10} {}, breaker {}, {} reconnects, {}\n",
        str_at(s, &["components", "mqtt", "status"]),
        connected,
        str_at(s, &["components", "mqtt", "breaker"]),
        number(s, &["components", "mqtt", "reconnects"]),
        last_ack
    ));
    push_error(&mut out, s, "mqtt");
    out
}

fn push_error(out: &mut String, s: &Value, component: &str) {
    if let Some(e) = at(s, &["components", component, "last_error"]) {
        out.push_str(&format!(
            "          last error {} at {}: {}\n",
            str_at(e, &["code"]),
            str_at(e, &["at"]),
            str_at(e, &["message"])
        ));
    }
}

/// One line per snapshot for `--watch`.
pub fn watch_line(s: &Value) -> String {
    let fix_age = seconds_ago(s, &["components", "gnss", "last_fix_age_s"])
        .map(|a| format!(", {a} ago"))
        .unwrap_or_default();
    let connected = match at(s, &["components", "mqtt", "connected"]).and_then(Value::as_bool) {
        Some(true) => "connected",
        _ => "disconnected",
    };
    format!(
        "{} {:<9} gnss {} ({}{})  buffer {} (depth {})  mqtt {} ({}, breaker {})",
        str_at(s, &["time"]),
        str_at(s, &["status"]),
        str_at(s, &["components", "gnss", "status"]),
        str_at(s, &["components", "gnss", "fix"]),
        fix_age,
        str_at(s, &["components", "buffer", "status"]),
        number(s, &["components", "buffer", "depth"]),
        str_at(s, &["components", "mqtt", "status"]),
        connected,
        str_at(s, &["components", "mqtt", "breaker"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_or_without_scheme_and_health_path_reach_the_same_endpoint() {
        for url in [
            "http://127.0.0.1:8470",
            "http://127.0.0.1:8470/",
            "127.0.0.1:8470",
            "http://127.0.0.1:8470/health",
            "http://127.0.0.1:8470/health/stream",
        ] {
            let t = Target::parse(url).unwrap();
            assert_eq!(t.authority, "127.0.0.1:8470", "{url}");
            assert_eq!(t.base, "", "{url}");
        }
        assert_eq!(Target::parse("http://[::1]").unwrap().authority, "[::1]:80");
        assert_eq!(
            Target::parse("http://h:1/agent/health").unwrap().base,
            "/agent"
        );
        assert!(Target::parse("https://127.0.0.1:8470").is_err());
        assert!(Target::parse("http://").is_err());
        assert!(Target::parse("http://user@h:1").is_err());
    }

    #[test]
    fn the_agent_is_asked_where_its_config_says_it_listens() {
        assert_eq!(
            url_for("127.0.0.1:9001".parse().unwrap()),
            "http://127.0.0.1:9001"
        );
        assert_eq!(
            url_for("0.0.0.0:8470".parse().unwrap()),
            "http://127.0.0.1:8470"
        );
        assert_eq!(url_for("[::]:8470".parse().unwrap()), "http://[::1]:8470");
    }

    #[test]
    fn exit_code_follows_the_snapshot_status() {
        let code = |s: &str| exit_code(&serde_json::json!({ "status": s }));
        assert_eq!(code("healthy"), 0);
        assert_eq!(code("degraded"), 1);
        assert_eq!(code("unhealthy"), 2);
        assert_eq!(code("confused"), 2);
    }

    #[test]
    fn the_summary_names_every_component_and_the_last_error() {
        let s = serde_json::json!({
            "status": "degraded", "time": "2024-01-01T00:00:00.000Z", "uptime_s": 3723.0,
            "version": "0.1.0",
            "components": {
                "gnss": {"status": "healthy", "fix": "3d", "last_fix_age_s": 0.4,
                         "rejected": {"checksum": 10, "hdop": 2, "no_fix": 0}},
                "buffer": {"status": "healthy", "depth": 0, "acked_seq": 1042,
                           "drain_eta_s": 0.0, "evicted": 0, "dead_letters": 0},
                "mqtt": {"status": "degraded", "connected": false, "breaker": "open",
                         "reconnects": 3,
                         "last_error": {"code": "MQTT_CONNECT", "message": "refused",
                                        "at": "2024-01-01T00:00:00.000Z"}}
            }
        });
        let text = summary(&s);
        assert!(text.contains("DEGRADED"), "{text}");
        assert!(text.contains("up 1h 02m 03s"), "{text}");
        assert!(text.contains("12 rejected (checksum 10, hdop 2)"), "{text}");
        assert!(text.contains("acked seq 1042"), "{text}");
        assert!(text.contains("disconnected, breaker open"), "{text}");
        assert!(text.contains("last error MQTT_CONNECT"), "{text}");
        assert!(text.lines().count() <= 24, "fits one screen");
        assert!(watch_line(&s).contains("mqtt degraded (disconnected, breaker open)"));
    }
}
