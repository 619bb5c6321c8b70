//! The health endpoint over real sockets: keys of the spec, status codes, the stream, error
//! answers, limits under load and against silent clients, and `status` against it.

use gps_agent::cli::status;
use gps_agent::clock::{Clock, ManualTime};
use gps_agent::fix::FixMode;
use gps_agent::health::{serve_with, Metrics, ServeOptions};
use gps_agent::rejection::Reason;
use gps_agent::status::{BreakerState, LastFix, Status, StatusBoard};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[path = "support/wait.rs"]
#[allow(dead_code)] // Only the async flavour here.
mod wait;

struct Server {
    addr: SocketAddr,
    state: StatusBoard,
    clock: Arc<ManualTime>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn fast_options() -> ServeOptions {
    ServeOptions {
        header_timeout: Duration::from_millis(300),
        stream_interval: Duration::from_millis(200),
        shutdown_grace: Duration::from_millis(300),
        ..ServeOptions::default()
    }
}

async fn start(options: ServeOptions) -> Server {
    let (agent_clock, clock) = Clock::manual(1_700_000_000_000);
    let state = StatusBoard::new(agent_clock);
    let metrics = Arc::new(Metrics::new(state.clone()));
    metrics.sentences("ok", 1);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_with(
        listener,
        state.clone(),
        metrics,
        shutdown.clone(),
        options,
    ));
    Server {
        addr,
        state,
        clock,
        shutdown,
        task,
    }
}

fn make_healthy(state: &StatusBoard) {
    let now = state.clock().now();
    state.gnss(|g| {
        g.connected = true;
        g.last_fix = Some(LastFix {
            at: now,
            mode: FixMode::ThreeD,
        });
        g.rejected.add(Reason::Checksum);
    });
    state.buffer(|b| {
        b.depth = 2;
        b.oldest_time_ms = Some(1_699_999_990_000);
    });
    state.mqtt(|m| {
        m.connected = true;
        m.breaker = BreakerState::Closed;
        m.reconnects = 1;
        m.last_ack_at = Some(now);
        m.acked_seq = 40;
    });
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on its own connection (`Connection: close`), the whole answer read.
async fn request(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .expect("answer within 5 s")
        .unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status: status.parse().unwrap(),
        headers,
        body: body.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_has_every_spec_key_and_answers_200_only_when_healthy() {
    let server = start(fast_options()).await;
    let degraded = request(server.addr, "GET", "/health", "").await;
    assert_eq!(degraded.status, 503, "a fresh agent has no fix yet");
    assert_eq!(degraded.json()["status"], "degraded");
    assert_eq!(degraded.header("content-type"), Some("application/json"));

    make_healthy(&server.state);
    server.clock.advance(Duration::from_millis(1500));
    let answer = request(server.addr, "GET", "/health", "").await;
    assert_eq!(answer.status, 200);
    let v = answer.json();
    let paths: &[&[&str]] = &[
        &["status"],
        &["time"],
        &["uptime_s"],
        &["version"],
        &["components", "gnss", "status"],
        &["components", "gnss", "fix"],
        &["components", "gnss", "last_fix_age_s"],
        &["components", "gnss", "rejected"],
        &["components", "buffer", "status"],
        &["components", "buffer", "depth"],
        &["components", "buffer", "oldest_age_s"],
        &["components", "buffer", "acked_seq"],
        &["components", "buffer", "evicted"],
        &["components", "buffer", "dead_letters"],
        &["components", "mqtt", "status"],
        &["components", "mqtt", "connected"],
        &["components", "mqtt", "breaker"],
        &["components", "mqtt", "reconnects"],
        &["components", "mqtt", "last_ack_age_s"],
    ];
    for path in paths {
        let found = path.iter().try_fold(&v, |v, k| v.get(*k));
        assert!(found.is_some(), "missing {}", path.join("."));
    }
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["time"], "2023-11-14T22:13:21.500Z");
    assert_eq!(v["uptime_s"], 1.5);
    assert_eq!(v["components"]["gnss"]["fix"], "3d");
    assert_eq!(v["components"]["gnss"]["last_fix_age_s"], 1.5);
    assert_eq!(v["components"]["gnss"]["rejected"]["checksum"], 1);
    assert_eq!(v["components"]["buffer"]["oldest_age_s"], 11.5);
    assert_eq!(v["components"]["buffer"]["acked_seq"], 40);
    assert_eq!(v["components"]["mqtt"]["breaker"], "closed");
    assert_eq!(v["components"]["mqtt"]["connected"], true);
    // drain_eta_s is omitted until a drain rate is known (one ack sample so far).
    assert!(v["components"]["buffer"].get("drain_eta_s").is_none());

    #[derive(Debug, thiserror::Error)]
    #[error("device gone")]
    struct Gone;
    impl gps_agent::error::Classified for Gone {
        fn code(&self) -> &'static str {
            "GNSS_DEVICE_GONE"
        }
        fn class(&self) -> gps_agent::error::ErrorClass {
            gps_agent::error::ErrorClass::Transient
        }
    }
    let gone = server.state.error_now(&Gone);
    server.state.gnss(|g| g.last_error = Some(gone));
    server.state.buffer(|b| b.condition = Status::Unhealthy);
    let answer = request(server.addr, "GET", "/health", "").await;
    assert_eq!(answer.status, 503);
    let v = answer.json();
    assert_eq!(v["status"], "unhealthy");
    let err: &Value = &v["components"]["gnss"]["last_error"];
    let expected = serde_json::json!({
        "code": "GNSS_DEVICE_GONE",
        "message": "device gone",
        "at": "2023-11-14T22:13:21.500Z",
    });
    assert_eq!(err, &expected);
    server.shutdown.cancel();
}

/// Reads stream lines (JSON objects) as they arrive, each with its arrival time.
async fn read_stream_lines(
    s: &mut TcpStream,
    want: usize,
    within: Duration,
) -> Vec<(Instant, Value)> {
    let mut got = Vec::new();
    let mut pending = String::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    while got.len() < want {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                if v.is_object() {
                    got.push((Instant::now(), v));
                }
            }
        }
    }
    got
}

async fn open_stream(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_a_line_per_interval_and_at_once_on_change() {
    let server = start(fast_options()).await;
    let mut s = open_stream(server.addr).await;
    let started = Instant::now();
    let lines = read_stream_lines(&mut s, 5, Duration::from_secs(4)).await;
    assert_eq!(lines.len(), 5, "five lines at 200 ms intervals");
    let elapsed = lines[4].0 - started;
    assert!(
        elapsed >= Duration::from_millis(700),
        "periodic, not flooding: {elapsed:?}"
    );
    assert_eq!(lines[0].1["status"], "degraded");

    // An hour between periodic lines: a line after a change can only be the change's.
    let server = start(ServeOptions {
        stream_interval: Duration::from_secs(3600),
        ..fast_options()
    })
    .await;
    let mut s = open_stream(server.addr).await;
    let first = read_stream_lines(&mut s, 1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1, "the first line comes at once");
    server.state.mqtt(|m| m.connected = true);
    let next = read_stream_lines(&mut s, 1, Duration::from_secs(10)).await;
    assert_eq!(
        next.len(),
        1,
        "a change sends a line without waiting for the tick"
    );
    assert_eq!(next[0].1["components"]["mqtt"]["connected"], true);
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_the_server_returns() {
    let server = start(fast_options()).await;
    let mut s = open_stream(server.addr).await;
    assert_eq!(
        read_stream_lines(&mut s, 1, Duration::from_secs(2))
            .await
            .len(),
        1
    );
    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), server.task)
        .await
        .expect("serve returns within the grace")
        .unwrap();
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the stream connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused_with_json() {
    let server = start(ServeOptions {
        max_streams: 2,
        ..fast_options()
    })
    .await;
    let mut a = open_stream(server.addr).await;
    let mut b = open_stream(server.addr).await;
    assert_eq!(
        read_stream_lines(&mut a, 1, Duration::from_secs(2))
            .await
            .len(),
        1
    );
    assert_eq!(
        read_stream_lines(&mut b, 1, Duration::from_secs(2))
            .await
            .len(),
        1
    );
    let third = request(server.addr, "GET", "/health/stream", "").await;
    assert_eq!(third.status, 503);
    assert_eq!(third.json()["error"], "too_many_streams");
    drop(a);
    // The slot comes back once the server notices the client left (at its next line).
    wait::until_async(
        "a stream slot freed when its client left",
        Duration::from_secs(10),
        async || {
            let mut c = open_stream(server.addr).await;
            read_stream_lines(&mut c, 1, Duration::from_millis(500))
                .await
                .len()
                == 1
        },
    )
    .await;
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_answers_200_while_the_main_loop_heartbeats() {
    let server = start(fast_options()).await;
    assert_eq!(request(server.addr, "GET", "/live", "").await.status, 200);
    server.clock.advance(Duration::from_secs(31));
    let stalled = request(server.addr, "GET", "/live", "").await;
    assert_eq!(stalled.status, 503);
    assert_eq!(stalled.json()["live"], false);
    server.state.heartbeat();
    assert_eq!(request(server.addr, "GET", "/live", "").await.status, 200);
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_use_the_gps_agent_prefix_and_the_openmetrics_type() {
    let server = start(fast_options()).await;
    let answer = request(server.addr, "GET", "/metrics", "").await;
    assert_eq!(answer.status, 200);
    assert!(answer
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    assert!(answer
        .body
        .contains("gps_agent_nmea_sentences_total{result=\"ok\"} 1"));
    assert!(answer
        .body
        .contains("gps_agent_fix_to_ack_latency_seconds_bucket"));
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_and_carry_the_request_id() {
    let server = start(fast_options()).await;
    let answer = request(server.addr, "GET", "/nope", "X-Request-ID: trace-42\r\n").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.header("x-request-id"), Some("trace-42"));
    let v = answer.json();
    assert_eq!(v["status_code"], 404);
    assert_eq!(v["error"], "not_found");
    assert_eq!(v["request_id"], "trace-42");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));

    let made = request(server.addr, "GET", "/nope", "").await;
    let id = made
        .header("x-request-id")
        .expect("an id is made")
        .to_owned();
    assert_eq!(id.len(), 16);
    assert_eq!(made.json()["request_id"], id.as_str());

    let post = request(server.addr, "POST", "/health", "Content-Length: 0\r\n").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.json()["error"], "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    let query = request(server.addr, "GET", "/health?verbose=1", "").await;
    assert_eq!(query.status, 400);
    assert_eq!(query.json()["error"], "bad_query");

    let head = request(server.addr, "HEAD", "/live", "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(
        head.header("x-request-id").is_some(),
        "every answer has an id"
    );
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_from_fifty_clients_are_all_answered() {
    let server = start(fast_options()).await;
    make_healthy(&server.state);
    let addr = server.addr;
    let clients: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for _ in 0..20 {
                    codes.push(request(addr, "GET", "/health", "").await.status);
                }
                codes
            })
        })
        .collect();
    let mut ok = 0;
    let mut busy = 0;
    for client in clients {
        for code in client.await.unwrap() {
            match code {
                200 => ok += 1,
                503 => busy += 1,
                other => panic!("unexpected HTTP {other}"),
            }
        }
    }
    assert_eq!(ok + busy, 1000);
    assert!(
        ok >= 250,
        "a good share is served, not refused: {ok} ok, {busy} busy"
    );
    assert_eq!(request(addr, "GET", "/health", "").await.status, 200);
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_does_not_hold_up_others() {
    let server = start(ServeOptions {
        header_timeout: Duration::from_secs(60),
        ..fast_options()
    })
    .await;
    let silent = TcpStream::connect(server.addr).await.unwrap();
    // Answered while the silent client still holds its connection open.
    assert_eq!(request(server.addr, "GET", "/live", "").await.status, 200);
    let mut probe = [0u8; 1];
    match silent.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the silent connection should still be open: {other:?}"),
    }
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_at_the_header_timeout() {
    let server = start(ServeOptions {
        header_timeout: Duration::from_secs(1),
        ..fast_options()
    })
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest))
        .await
        .expect("the silent connection is closed by the server")
        .ok();
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(900),
        "closed at the timeout, not before: {held:?}"
    );
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_code_follows_the_agent_and_is_2_when_unreachable() {
    let server = start(fast_options()).await;
    let url = server.url();
    let mut out = Vec::new();
    assert_eq!(
        status::once(&url, &mut out).await,
        1,
        "fresh agent: degraded"
    );
    assert_eq!(summary_status(&out), "DEGRADED");

    make_healthy(&server.state);
    let mut out = Vec::new();
    assert_eq!(status::once(&format!("{url}/health"), &mut out).await, 0);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(summary_status(&out), "HEALTHY", "{text}");
    assert!(text.contains("fix 3d"), "{text}");

    server.state.buffer(|b| b.condition = Status::Unhealthy);
    assert_eq!(status::once(&url, &mut Vec::new()).await, 2);

    // Unreachable: a port nobody listens on any more.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    assert_eq!(status::once(&gone_url, &mut Vec::new()).await, 2);
    server.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_prints_a_line_per_snapshot_and_exits_as_the_last_one() {
    let server = start(fast_options()).await;
    make_healthy(&server.state);
    let out = Printed::default();
    let code = status::watch_until(
        &server.url(),
        &mut out.clone(),
        wait::until_async("three lines", Duration::from_secs(10), async || {
            out.lines() >= 3
        }),
    )
    .await;
    assert_eq!(code, 0);
    let text = out.text();
    assert!(text.lines().count() >= 3, "a line per snapshot: {text}");
    // `<time> <status> gnss ...`: the status word itself, so "unhealthy" does not pass.
    assert!(
        text.lines()
            .all(|l| l.split_whitespace().nth(1) == Some("healthy")),
        "{text}"
    );

    // The agent going away, while the watch tails it, ends the watch with 2.
    let out = Printed::default();
    let mut sink = out.clone();
    let url = server.url();
    let (code, ()) = tokio::join!(
        async {
            // Never stopped from here: only the agent going away ends it (5 s hang guard).
            let watch = status::watch_until(&url, &mut sink, std::future::pending::<()>());
            tokio::time::timeout(Duration::from_secs(5), watch)
                .await
                .expect("the watch ended when the agent went away")
        },
        async {
            wait::until_async("the watch tailing", Duration::from_secs(10), async || {
                out.lines() >= 1
            })
            .await;
            server.shutdown.cancel();
        }
    );
    assert_eq!(code, 2, "{}", out.text());
}

/// The status word of `status`'s summary (`gps-agent <version>: HEALTHY  (at ...`).
fn summary_status(out: &[u8]) -> String {
    let text = String::from_utf8_lossy(out);
    let head = text.lines().next().unwrap_or_default();
    head.split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

/// What `status --watch` printed, shared so a test can wait on it while the watch runs.
#[derive(Clone, Default)]
struct Printed(Arc<std::sync::Mutex<Vec<u8>>>);

impl Printed {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn lines(&self) -> usize {
        self.text().lines().count()
    }
}

impl std::io::Write for Printed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
