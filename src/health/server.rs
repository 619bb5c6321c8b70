//! The health endpoint: HTTP/1.1 on hyper 1, local only (127.0.0.1:8470 by default).
//!
//! In: a bound `TcpListener`, the shared [`StatusBoard`] and [`Metrics`], a shutdown token.
//! Out: `GET /health` (snapshot, 200 healthy / 503 otherwise), `/health/stream` (JSON Lines,
//! one per `stream_interval` and on every change), `/live` (200 while the main loop
//! heartbeats), `/metrics` (OpenMetrics text). Only `GET` and `HEAD`: anything else is 405;
//! these paths take no query string, so any query is a 400 `bad_query` (a typo such as
//! `/health?verbose` is answered, not silently ignored). Errors are JSON
//! `{status_code, error, message, request_id}`; every answer echoes `X-Request-ID`.
//!
//! It must never let a client hurt the agent: connections are bounded (over the limit a
//! canned 503 is written and the socket closed, but `/live` and `/health` have a lane of
//! their own, see [`super::admission`]), a client has `header_timeout` to send its
//! request head (the same bound applies while a keep-alive connection idles), request
//! bodies are never read, streams are bounded separately and a stream whose client stops
//! reading for `stream_stall_timeout` is cut. On shutdown, streams end at once and
//! connections get `shutdown_grace` to finish before they are dropped.

use super::admission::{for_lane, Lease, Slots, SCREEN_BUDGET};
use super::metrics::{Metrics, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use super::snapshot::snapshot;
use crate::error::{Classified, ErrorClass};
use crate::status::{Status, StatusBoard};

use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// A longer client-sent request id is cut: it is echoed and logged.
const MAX_REQUEST_ID: usize = 64;
/// Refused connections answered at the same time; beyond this they are just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// Bytes of a refused connection's request read before answering (so closing does not reset
/// the connection under the client before it reads the 503).
const REFUSAL_READ_LIMIT: usize = 8 * 1024;
/// How long a refused client gets to take the answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_millis(250);
/// While a waiting connection's head is incomplete, look again this often.
const HEAD_POLL: Duration = Duration::from_millis(10);
/// hyper's read buffer: request heads larger than this are refused by hyper.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Errors of the health endpoint.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
    #[error("accepting a health connection failed: {source}")]
    Accept { source: std::io::Error },
    #[error("encoding metrics failed")]
    Metrics { source: std::fmt::Error },
}

impl Classified for HealthError {
    fn code(&self) -> &'static str {
        match self {
            HealthError::Bind { .. } => "HEALTH_BIND",
            HealthError::Accept { .. } => "HEALTH_ACCEPT",
            HealthError::Metrics { .. } => "HEALTH_METRICS",
        }
    }
    fn class(&self) -> ErrorClass {
        match self {
            // Port taken or not allowed: retrying will not change it; the operator must.
            HealthError::Bind { .. } => ErrorClass::Permanent,
            HealthError::Accept { .. } => ErrorClass::Transient,
            HealthError::Metrics { .. } => ErrorClass::Permanent,
        }
    }
}

/// Binds the endpoint's listener (`[health] listen`, e.g. `127.0.0.1:8470`).
pub async fn bind(listen: std::net::SocketAddr) -> Result<TcpListener, HealthError> {
    TcpListener::bind(listen)
        .await
        .map_err(|source| HealthError::Bind {
            listen: listen.to_string(),
            source,
        })
}

/// Limits and intervals of the server. The defaults are for production; tests shorten them.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections served at once; more are refused with a 503.
    pub max_connections: usize,
    /// `/health/stream` responses at once (each also holds a connection).
    pub max_streams: usize,
    /// Time a client has to send a complete request head, also the keep-alive idle limit.
    pub header_timeout: Duration,
    /// A stream line at least this often.
    pub stream_interval: Duration,
    /// A stream whose client has not taken a line for this long is cut.
    pub stream_stall_timeout: Duration,
    /// `/live` answers 503 when the main loop has not heartbeat for this long.
    pub live_timeout: Duration,
    /// On shutdown, connections get this long to finish before they are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 32,
            max_streams: 8,
            header_timeout: Duration::from_secs(2),
            stream_interval: Duration::from_secs(1),
            stream_stall_timeout: Duration::from_secs(30),
            live_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// What every connection needs.
struct Shared {
    state: StatusBoard,
    metrics: Arc<Metrics>,
    options: ServeOptions,
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
}

/// Serves the endpoint with default options until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: StatusBoard,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    serve_with(listener, state, metrics, shutdown, ServeOptions::default()).await
}

/// Serves the endpoint until `shutdown` is cancelled, then waits (bounded by
/// `shutdown_grace`) for open connections to finish.
pub async fn serve_with(
    listener: TcpListener,
    state: StatusBoard,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    options: ServeOptions,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(listen = %local, "health endpoint listening");
    let slots = Slots::new(options.max_connections);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let grace = options.shutdown_grace;
    let shared = Arc::new(Shared {
        state,
        metrics,
        streams: Arc::new(Semaphore::new(options.max_streams.max(1))),
        options,
        shutdown: shutdown.clone(),
    });
    let tracker = TaskTracker::new();

    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(source) => {
                let err = HealthError::Accept { source };
                warn!(code = err.code(), error = %err, "health accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        // Small answers: Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        match slots.try_lease(Instant::now()) {
            Some(lease) => {
                let hold = Hold::Slot(lease);
                tracker.spawn(connection(stream, hold, shared.clone(), tracker.clone()));
            }
            None => {
                tracker.spawn(admit(
                    stream,
                    Arc::clone(&slots),
                    Arc::clone(&refusals),
                    shared.clone(),
                    tracker.clone(),
                ));
            }
        }
    }

    tracker.close();
    // Connections see the same token: streams end, idle keep-alives close. Past the grace
    // (plus a little for the drop itself) we stop waiting: the process is leaving anyway.
    let _ = tokio::time::timeout(grace + Duration::from_millis(500), tracker.wait()).await;
    info!(listen = %local, "health endpoint stopped");
}

/// A connection that arrived while every slot was taken (see [`super::admission`]): a
/// `/live` or `/health` request goes to the watchdog's lane (at once when its head is
/// already here); any other waits for its whole request head, then for a slot (taken from
/// the longest-idle connection if need be); refused with a 503 when its head does not come
/// within the budget, when no slot frees, or when newer arrivals push it out of a full
/// waiting room.
async fn admit(
    stream: TcpStream,
    slots: Arc<Slots>,
    refusals: Arc<Semaphore>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let outcome = if head_now(&stream, &mut buf) == Some(true) {
        slots
            .lane(SCREEN_BUDGET)
            .await
            .map(Hold::Lane)
            .ok_or("busy")
    } else {
        let waiting = slots.wait();
        tokio::select! {
            _ = waiting.refused.cancelled() => Err("waiting_room_full"),
            _ = shared.shutdown.cancelled() => return,
            outcome = async {
                let lane = head(&stream, &mut buf, SCREEN_BUDGET).await.ok_or("slow_head")?;
                waiting.head_complete();
                if lane {
                    slots.lane(SCREEN_BUDGET).await.map(Hold::Lane).ok_or("busy")
                } else {
                    slots.lease_for_complete_head(SCREEN_BUDGET).await.map(Hold::Slot).ok_or("busy")
                }
            } => outcome,
        }
    };
    drop(buf);
    match outcome {
        Ok(hold) => connection(stream, hold, shared, tracker).await,
        Err(reason) => {
            shared.metrics.health_dropped(reason);
            warn!(
                code = "HEALTH_BUSY",
                reason, "health connection refused: every slot taken"
            );
            match refusals.try_acquire_owned() {
                Ok(permit) => refuse(stream, permit).await,
                Err(_) => drop(stream),
            }
        }
    }
}

/// What the bytes peeked so far say: `None` while the head is incomplete; `Some(lane)`
/// once it is whole (or larger than a head may be, which hyper then refuses), `lane` when
/// it asks what the watchdog's lane serves.
fn head_seen(seen: &[u8], capacity: usize) -> Option<bool> {
    let end = seen.windows(4).position(|w| w == b"\r\n\r\n");
    (end.is_some() || seen.len() == capacity).then(|| for_lane(seen))
}

/// The request head as it stands now, without waiting (see [`head_seen`]).
fn head_now(stream: &TcpStream, buf: &mut [u8]) -> Option<bool> {
    // SAFETY: a peek into `buf`, within its length, on a socket `stream` owns; MSG_DONTWAIT
    // keeps it from blocking the runtime's thread.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let n = usize::try_from(n).ok().filter(|n| *n > 0)?;
    head_seen(buf.get(..n)?, buf.len())
}

/// The request head within `budget` (see [`head_seen`]); `None` if the client closed or
/// dribbles.
async fn head(stream: &TcpStream, buf: &mut [u8], budget: Duration) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(buf)).await;
        match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => {
                if let Some(lane) = head_seen(buf.get(..n).unwrap_or_default(), buf.len()) {
                    return Some(lane);
                }
            }
        }
        // The bytes stay in the socket until read: look again when more may have come.
        if tokio::time::Instant::now() + HEAD_POLL >= deadline {
            return None;
        }
        tokio::time::sleep(HEAD_POLL).await;
    }
}

/// What a connection is served on.
enum Hold {
    /// One of the slots: keep-alive, and taken from it when it idles and one is wanted.
    Slot(Lease),
    /// One of the watchdog's lane: one request, then closed; never taken.
    Lane(OwnedSemaphorePermit),
}

/// One accepted connection, holding its slot until it ends (or the slot is given to a
/// connection with a complete request while this one idles).
async fn connection(stream: TcpStream, hold: Hold, shared: Arc<Shared>, tracker: TaskTracker) {
    let (lease, keep_alive, _lane) = match hold {
        Hold::Slot(lease) => (Some(Arc::new(lease)), true, None),
        Hold::Lane(permit) => (None, false, Some(permit)),
    };
    // Never cancelled for the lane: nothing takes its slot.
    let evicted = lease
        .as_ref()
        .map_or_else(CancellationToken::new, |l| l.evicted().clone());
    // Cancelled by a stream whose client stopped reading: hyper would otherwise wait on the
    // socket forever.
    let cut = CancellationToken::new();
    let service = {
        let shared = shared.clone();
        let cut = cut.clone();
        let lease = lease.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            if let Some(lease) = &lease {
                lease.busy();
            }
            let response = route(&shared, &req, &cut, &tracker);
            if let Some(lease) = &lease {
                if req.uri().path() == "/health/stream" && response.status() == StatusCode::OK {
                    lease.streaming();
                } else {
                    lease.idle();
                }
            }
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.options.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(keep_alive);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(error = %e, "health connection ended with an error");
            }
        }
        _ = cut.cancelled() => {}
        _ = evicted.cancelled() => {
            shared.metrics.health_dropped("evicted_idle");
            warn!(code = "HEALTH_BUSY", reason = "evicted_idle",
                "idle health connection closed for a waiting request: every slot taken");
        }
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cut.cancelled() => {}
                _ = tokio::time::sleep(shared.options.shutdown_grace) => {}
            }
        }
    }
}

/// Over the connection limit: read the head (bounded), answer 503, close.
async fn refuse(mut stream: TcpStream, permit: OwnedSemaphorePermit) {
    let _permit = permit;
    let request_id = make_request_id();
    let body = error_body(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_busy",
        "too many connections to the health endpoint; retry shortly",
        &request_id,
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n{}: {}\r\n\r\n{}",
        body.len(),
        REQUEST_ID_HEADER,
        request_id,
        body
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while head.len() < REFUSAL_READ_LIMIT && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            }
        }
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

type HealthBody = BoxBody<Bytes, Infallible>;

fn route(
    shared: &Shared,
    req: &Request<Incoming>,
    cut: &CancellationToken,
    tracker: &TaskTracker,
) -> Response<HealthBody> {
    let request_id = request_id(req.headers());
    let path = req.uri().path();
    let known = matches!(path, "/health" | "/health/stream" | "/live" | "/metrics");
    // The method first: `OPTIONS *` and `CONNECT host:port` name no path of ours, and are
    // still a method this endpoint does not take.
    let mut response = if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only GET and HEAD are allowed",
            &request_id,
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else if !known {
        error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path; try /health, /health/stream, /live or /metrics",
            &request_id,
        )
    } else if req.uri().query().is_some_and(|q| !q.is_empty()) {
        error_response(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "this path takes no query parameters",
            &request_id,
        )
    } else {
        match path {
            "/health" => health(shared),
            "/health/stream" => stream(shared, req.method() == Method::HEAD, cut, tracker)
                .unwrap_or_else(|| {
                    error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too_many_streams",
                        "too many /health/stream clients; retry later",
                        &request_id,
                    )
                }),
            "/live" => live(shared),
            _ => metrics(shared, &request_id),
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn health(shared: &Shared) -> Response<HealthBody> {
    let snapshot = snapshot(&shared.state.read(), shared.state.clock());
    let code = if snapshot.status == Status::Healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_vec(&snapshot).unwrap_or_default();
    json_response(code, body)
}

fn live(shared: &Shared) -> Response<HealthBody> {
    let now = shared.state.clock().now();
    let since = now.saturating_duration_since(shared.state.read().heartbeat);
    let live = since <= shared.options.live_timeout;
    let body = serde_json::json!({
        "live": live,
        "since_heartbeat_s": (since.as_secs_f64() * 1000.0).round() / 1000.0,
    });
    let code = if live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, serde_json::to_vec(&body).unwrap_or_default())
}

fn metrics(shared: &Shared, request_id: &str) -> Response<HealthBody> {
    match shared.metrics.encode() {
        Ok(text) => {
            let mut r = Response::new(full(text.into_bytes()));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            r
        }
        Err(source) => {
            let err = HealthError::Metrics { source };
            warn!(code = err.code(), error = %err, "metrics encoding failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "metrics could not be encoded",
                request_id,
            )
        }
    }
}

/// Starts a `/health/stream` answer, or `None` when all stream slots are taken.
fn stream(
    shared: &Shared,
    head_only: bool,
    cut: &CancellationToken,
    tracker: &TaskTracker,
) -> Option<Response<HealthBody>> {
    let mut response = if head_only {
        Response::new(full(Vec::new()))
    } else {
        let permit = shared.streams.clone().try_acquire_owned().ok()?;
        // One line in flight: a slow reader makes the producer wait (and skip the lines it
        // could not take) instead of queueing snapshots.
        let (lines, rx) = mpsc::channel(1);
        tracker.spawn(produce_lines(
            shared.state.clone(),
            lines,
            shared.options.clone(),
            shared.shutdown.clone(),
            cut.clone(),
            permit,
        ));
        Response::new(BoxBody::new(LineBody { rx }))
    };
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Some(response)
}

/// Writes a snapshot line now, then at every change and at least every `stream_interval`,
/// until the client leaves, stalls, or the agent shuts down.
async fn produce_lines(
    state: StatusBoard,
    lines: mpsc::Sender<Bytes>,
    options: ServeOptions,
    shutdown: CancellationToken,
    cut: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let mut changes = state.subscribe();
    changes.borrow_and_update();
    let mut tick = tokio::time::interval(options.stream_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = lines.closed() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                // The periodic line counts from the last line sent.
                tick.reset();
            }
            _ = tick.tick() => {}
        }
        changes.borrow_and_update();
        let mut line =
            serde_json::to_vec(&snapshot(&state.read(), state.clock())).unwrap_or_default();
        line.push(b'\n');
        match tokio::time::timeout(options.stream_stall_timeout, lines.send(Bytes::from(line)))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                warn!(
                    code = "HEALTH_STREAM_STALLED",
                    "health stream client stopped reading; closing it"
                );
                cut.cancel();
                break;
            }
        }
    }
}

/// A response body fed line by line from [`produce_lines`]; it ends when the producer does.
struct LineBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for LineBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

fn full(bytes: Vec<u8>) -> HealthBody {
    Full::new(Bytes::from(bytes)).boxed()
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response<HealthBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_body(code: StatusCode, error: &str, message: &str, request_id: &str) -> String {
    serde_json::json!({
        "status_code": code.as_u16(),
        "error": error,
        "message": message,
        "request_id": request_id,
    })
    .to_string()
}

fn error_response(
    code: StatusCode,
    error: &str,
    message: &str,
    request_id: &str,
) -> Response<HealthBody> {
    json_response(
        code,
        error_body(code, error, message, request_id).into_bytes(),
    )
}

/// The client's `X-Request-ID` if it has anything usable (letters, digits, `-_.:`, at most
/// [`MAX_REQUEST_ID`] of them, other characters dropped: the id lands in logs and headers),
/// or a fresh one.
fn request_id(headers: &HeaderMap) -> String {
    let given: String = headers
        .get(REQUEST_ID_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default()
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        .take(MAX_REQUEST_ID)
        .map(|&b| char::from(b))
        .collect();
    if given.is_empty() {
        make_request_id()
    } else {
        given
    }
}

/// 16 hex digits: random when the OS gives randomness, else a process counter (ids need
/// to be distinct, not secret).
fn make_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = getrandom::u64().unwrap_or_else(|_| COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_request_id_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(request_id(&h), "abc-123_x.y:z");
    }

    #[test]
    fn a_hostile_request_id_is_sanitised_and_bounded() {
        let mut h = HeaderMap::new();
        let long = format!("a b\"c<{}", "x".repeat(500));
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_str(&long).unwrap());
        let id = request_id(&h);
        assert!(id.starts_with("abcx"));
        assert_eq!(id.len(), MAX_REQUEST_ID);
    }

    #[test]
    fn a_missing_or_empty_request_id_is_made() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h).len(), 16);
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("!!!"));
        let made = request_id(&h);
        assert_eq!(made.len(), 16);
        assert!(made.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
