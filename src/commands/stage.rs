//! The commands stage at run time: the [`Service`] driven by requests from the uplink's
//! [`RemoteStage`] seam, its ledger rows written to the buffer's file before each answer
//! goes out, and its effects carried out: a reconnect asked of the uplink, a configuration
//! applied as SIGHUP applies it (through the main loop) and watched until a broker accepts
//! a connection with it or rolled back, a backfill paced at `[history] backfill_rate`.
//!
//! It never blocks the fixes: the buffer is touched on the blocking pool, a page of history
//! at a time; answers wait in a bounded channel until the uplink's window has room, backfill
//! messages until the buffer has nothing pending for the uplink. A request it cannot take
//! (malformed, expired, ...) is answered and counted; it never stops the agent.

use super::answer::Answer;
use super::error::CommandError;
use super::remote_config::{self, AtStart, Files, Pending};
use super::service::{Effect, Facts, Handled, Service};
use crate::buffer::store::SharedStore;
use crate::buffer::{AnswerRow, HistoryWindow};
use crate::config::Settings;
use crate::error::Classified;
use crate::fix::Fix;
use crate::health::metrics::Metrics;
use crate::health::snapshot::snapshot;
use crate::status::StatusBoard;
use crate::uplink::payload::{self, FixBatch};
use crate::uplink::remote::{Outbound, RemoteStage};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often a configuration waiting for its confirmation is looked at.
const CONFIRM_POLL: Duration = Duration::from_millis(250);
/// How often a backfill looks whether the live fixes have left the buffer.
const LIVE_FIRST_POLL: Duration = Duration::from_millis(100);
/// Most messages waiting for the uplink in the stage (see [`Outbox`]).
const QUEUE_MAX: usize = 64;
/// Fixes read from the history at a time.
const BACKFILL_PAGE: usize = 100;
/// Longest a backfill message may be (the broker's usual limit is far above).
const BACKFILL_MESSAGE_BYTES: usize = 64 * 1024;
/// Most a `config.set` answer waits to be taken by the uplink before the file is applied
/// (applying it ends the connection the answer would go out on).
const ANSWER_HANDOVER: Duration = Duration::from_secs(2);

/// What the stage runs with.
pub struct StageContext {
    pub settings: Settings,
    pub config_path: Option<PathBuf>,
    pub store: SharedStore,
    pub board: StatusBoard,
    pub metrics: Arc<Metrics>,
    /// Apply the configuration file as SIGHUP does (the main loop's reload).
    pub apply: mpsc::Sender<()>,
    /// The file in force, as the main loop last loaded it (at start, SIGHUP, or apply).
    pub in_force: tokio::sync::watch::Receiver<Option<Arc<crate::app::config_file::Loaded>>>,
    /// What a start found owed of a configuration set remotely.
    pub at_start: AtStart,
}

/// A configuration waiting for a broker to accept a connection with it.
struct Confirming {
    pending: Pending,
    /// `reconnects` on the board when it was applied, if connected then: a connection
    /// counts only after it. `None`: any connection counts.
    after: Option<u64>,
}

/// A backfill under way: its messages come through `messages`, its end through `done`.
struct Backfilling {
    id: String,
    expires_ms: i64,
    done: tokio::sync::oneshot::Receiver<Result<Value, CommandError>>,
    cancel: CancellationToken,
}

/// Run the stage until `stop`.
pub async fn run(mut ctx: StageContext, mut remote: RemoteStage, stop: CancellationToken) {
    let now_ms = ctx.board.clock().utc_ms();
    let rows = with_buffer(&ctx.store, move |b| b.answers(now_ms))
        .await
        .unwrap_or_default();
    let (mut service, interrupted, key_error) =
        Service::new(&ctx.settings, ctx.config_path.clone(), rows, now_ms);
    if let Some(e) = key_error {
        warn!(component = "commands", code = "CMD_KEY", class = "permanent", error = %e,
            "the commands' public key cannot be read; every request is refused");
    }
    if let Some(l) = ctx.in_force.borrow_and_update().clone() {
        service.set_in_force(l.text.clone());
    }
    // Commands that ran when the agent stopped: answered once, now (queued for the uplink;
    // one backfill at a time, so fewer than the outbox holds).
    let mut queue = Outbox::default();
    for bytes in interrupted.iter().filter_map(|r| r.answer.clone()) {
        queue.push(Outbound::Answer(bytes));
    }
    record(&ctx.store, interrupted).await;
    let files = ctx.config_path.as_deref().map(Files::new);
    let mut confirming = None;
    match (&ctx.at_start, &files) {
        (AtStart::Waiting(p), Some(_)) => {
            info!(component = "commands", id = %p.id, deadline_ms = p.deadline_ms,
                "a configuration set remotely waits for a broker to accept it");
            service.set_confirming(true);
            confirming = Some(Confirming {
                pending: p.clone(),
                after: None,
            });
        }
        (AtStart::RolledBack(p), Some(files)) => {
            owe_rollback(&mut queue, files, p, ctx.settings.commands.confirm);
        }
        _ => {}
    }
    let (bf_tx, mut bf_rx) = mpsc::channel::<Vec<u8>>(1);
    let mut backfill: Option<Backfilling> = None;
    let mut poll = tokio::time::interval(CONFIRM_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            // A reload (SIGHUP, or a file applied here) put a file in force.
            Ok(()) = ctx.in_force.changed() => {
                if let Some(l) = ctx.in_force.borrow_and_update().clone() {
                    service.set_running(l.settings.clone());
                    service.set_in_force(l.text.clone());
                }
            }
            req = remote.requests.recv() => {
                let Some(raw) = req else { break };
                // Requests the uplink dropped while this stage was busy: counted now.
                let dropped = remote.dropped.swap(0, std::sync::atomic::Ordering::Relaxed);
                ctx.metrics.commands_by("CMD_DROPPED", dropped);
                let facts = Facts {
                    snapshot: serde_json::to_value(snapshot(&ctx.board.read(), ctx.board.clock()))
                        .unwrap_or(Value::Null),
                };
                let now_ms = ctx.board.clock().utc_ms();
                let handled = service.handle(&raw, now_ms, &facts);
                let effect = handled.effect.clone();
                answer(&ctx, &mut queue, handled).await;
                match effect {
                    None => {}
                    Some(Effect::Reconnect) => queue.push(Outbound::Reconnect),
                    Some(Effect::Apply { pending, mqtt_unchanged }) => {
                        queue.hand_over(&remote.outbox).await;
                        let mqtt = ctx.board.read().mqtt;
                        let after = (!mqtt_unchanged && mqtt.connected).then_some(mqtt.reconnects);
                        info!(component = "commands", id = %pending.id, sha256 = %pending.sha256,
                            "config.set: the new file is in force; applying it as SIGHUP does");
                        apply(&ctx, &mut service).await;
                        confirming = Some(Confirming { pending, after });
                    }
                    Some(Effect::Backfill { id, expires_ms, from_ms, to_ms, max_fixes }) => {
                        let (done_tx, done) = tokio::sync::oneshot::channel();
                        let cancel = stop.child_token();
                        tokio::spawn(republish(
                            ctx.store.clone(),
                            ctx.board.clone(),
                            ctx.settings.clone(),
                            id.clone(),
                            (from_ms, to_ms, max_fixes.unwrap_or(u64::MAX)),
                            bf_tx.clone(),
                            done_tx,
                            cancel.clone(),
                        ));
                        backfill = Some(Backfilling { id, expires_ms, done, cancel });
                    }
                }
            }
            permit = remote.outbox.reserve(), if !queue.is_empty() => {
                let Ok(permit) = permit else { break };
                if let Some(out) = queue.pop() {
                    permit.send(out);
                }
            }
            // A backfill message is taken only when nothing else waits: a backfill never
            // stands between an answer and the uplink.
            Some(message) = bf_rx.recv(), if queue.is_empty() => {
                queue.push(Outbound::Backfill(message));
            }
            result = async { (&mut backfill.as_mut()?.done).await.ok() }, if backfill.is_some() => {
                if let Some(b) = backfill.take() {
                    let result = result.unwrap_or_else(|| Err(CommandError::Failed("the backfill task ended".into())));
                    let (a, row) = service.finished(&b.id, b.expires_ms, result);
                    record(&ctx.store, vec![row]).await;
                    queue.push(Outbound::Answer(a.to_bytes()));
                    b.cancel.cancel();
                }
            }
            _ = poll.tick(), if confirming.is_some() => {
                let (Some(c), Some(files)) = (&confirming, &files) else { continue };
                let mqtt = ctx.board.read().mqtt;
                let accepted = mqtt.connected && c.after.is_none_or(|n| mqtt.reconnects > n);
                if accepted {
                    if let Err(e) = remote_config::confirm(files) {
                        warn!(component = "commands", code = "CMD_FAILED", class = "transient",
                            error = %e, "config.set: the confirmation could not be written");
                    }
                    info!(component = "commands", id = %c.pending.id,
                        "config.set confirmed: a broker accepted a connection with the new file");
                    confirming = None;
                    service.settled();
                } else if ctx.board.clock().utc_ms() >= c.pending.deadline_ms {
                    let pending = c.pending.clone();
                    confirming = None;
                    match remote_config::roll_back(files, &pending) {
                        Ok(rolled) => {
                            warn!(component = "commands", code = "CMD_ROLLED_BACK", class = "transient",
                                id = %pending.id,
                                "config.set rolled back: no broker accepted a connection with the new file in time");
                            apply(&ctx, &mut service).await;
                            owe_rollback(&mut queue, files, &rolled, ctx.settings.commands.confirm);
                        }
                        Err(e) => warn!(component = "commands", code = "CMD_FAILED", class = "critical",
                            error = %e, "config.set: the rollback could not be written"),
                    }
                    service.settled();
                }
            }
        }
    }
    if let Some(b) = backfill {
        b.cancel.cancel();
    }
}

/// Publish `handled`'s answer after its rows are written; count and log it.
async fn answer(ctx: &StageContext, queue: &mut Outbox, handled: Handled) {
    ctx.metrics.command(handled.outcome);
    match &handled.error {
        Some(e) => warn!(component = "commands", code = e.code(), class = e.class().as_str(),
            id = handled.answer.as_ref().map(|a| a.id.as_str()), error = %e, "remote command refused or failed"),
        None => info!(
            component = "commands",
            id = handled.answer.as_ref().map(|a| a.id.as_str()),
            outcome = handled.outcome,
            "remote command answered"
        ),
    }
    record(&ctx.store, handled.rows).await;
    if let Some(a) = handled.answer {
        queue.push(Outbound::Answer(a.to_bytes()));
    }
}

/// Apply the file in force as SIGHUP does, and tell the service what now runs.
async fn apply(ctx: &StageContext, service: &mut Service) {
    let _ = ctx.apply.send(()).await;
    if let Some(path) = &ctx.config_path {
        if let Ok(loaded) = crate::app::config_file::load(path) {
            service.set_running(loaded.settings);
            service.set_in_force(loaded.text);
        }
    }
}

/// The rollback's answer goes out (queued for the uplink), then nothing is owed.
fn owe_rollback(queue: &mut Outbox, files: &Files, pending: &Pending, confirm: Duration) {
    let a = Answer::error(
        &pending.id,
        &CommandError::RolledBack {
            confirm_s: confirm.as_secs_f64(),
        },
    );
    queue.push(Outbound::Answer(a.to_bytes()));
    if let Err(e) = remote_config::answered(files) {
        warn!(component = "commands", code = "CMD_FAILED", class = "transient", error = %e,
            "config.set: the rollback's answer could not be marked sent");
    }
}

/// What waits for the uplink, in order: the stage never waits on the uplink itself (it may
/// be away for as long as a configuration takes to roll back), so what is not yet taken
/// waits here, bounded: past [`QUEUE_MAX`] the oldest goes (an answer is had again by
/// asking again with the same id).
#[derive(Debug, Default)]
struct Outbox(std::collections::VecDeque<Outbound>);

impl Outbox {
    fn push(&mut self, out: Outbound) {
        if self.0.len() >= QUEUE_MAX {
            self.0.pop_front();
            warn!(
                component = "commands",
                code = "CMD_ANSWER_DROPPED",
                class = "transient",
                "an answer waited too long for the uplink and was dropped; asking again gets it"
            );
        }
        self.0.push_back(out);
    }

    fn pop(&mut self) -> Option<Outbound> {
        self.0.pop_front()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hand everything to the uplink and wait until it took it, at most
    /// [`ANSWER_HANDOVER`] (applying a configuration ends the connection it would go on).
    async fn hand_over(&mut self, outbox: &mpsc::Sender<Outbound>) {
        let until = tokio::time::Instant::now() + ANSWER_HANDOVER;
        while let Some(out) = self.0.pop_front() {
            match tokio::time::timeout_at(until, outbox.reserve()).await {
                Ok(Ok(permit)) => permit.send(out),
                _ => {
                    self.0.push_front(out);
                    return;
                }
            }
        }
        while outbox.capacity() < outbox.max_capacity() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Write ledger rows to the buffer's file; on a failing disk they stay in memory (the
/// ledger holds them for this run) and that is said.
async fn record(store: &SharedStore, rows: Vec<AnswerRow>) {
    if rows.is_empty() {
        return;
    }
    let result = with_buffer(store, move |b| b.record_answers(&rows, Instant::now())).await;
    if result.is_none() {
        warn!(
            component = "commands",
            code = "CMD_LEDGER",
            class = "transient",
            "answered ids not written to the buffer's file; they are kept for this run"
        );
    }
}

/// `f` on the buffer on the blocking pool; `None` without a buffer file or on its error.
async fn with_buffer<T: Send + 'static>(
    store: &SharedStore,
    f: impl FnOnce(&mut crate::buffer::Buffer) -> Result<T, crate::buffer::BufferError> + Send + 'static,
) -> Option<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = store.lock();
        let b = s.buffer_mut()?;
        match f(b) {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(component = "commands", code = e.code(), class = e.class().as_str(), error = %e,
                    "buffer refused a command's read or write");
                None
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// A backfill: the window read a page at a time and sent as fixes messages with
/// `"request": id`, at most one fix per `backfill_every`. Ends with the count.
#[allow(clippy::too_many_arguments)]
async fn republish(
    store: SharedStore,
    board: StatusBoard,
    settings: Settings,
    id: String,
    (from_ms, to_ms, max_fixes): (i64, i64, u64),
    out: mpsc::Sender<Vec<u8>>,
    done: tokio::sync::oneshot::Sender<Result<Value, CommandError>>,
    cancel: CancellationToken,
) {
    let every = settings.buffer.history.backfill_every;
    // At most a second's worth a message: the rate holds over any second, not only on
    // average (a message goes, then the wait its fixes earned).
    let per_second = (1.0 / every.as_secs_f64().max(1e-6)).ceil() as usize;
    let per_message = settings.mqtt.batch_max.get().min(per_second.max(1));
    let stream = store.stream();
    let mut window = HistoryWindow::new(from_ms, to_ms, max_fixes);
    let mut sent: u64 = 0;
    let mut next_at = tokio::time::Instant::now();
    loop {
        let w = window.clone();
        let page = with_buffer(&store, move |b| {
            let mut w = w;
            let mut out = Vec::new();
            let more = b.history_page(&mut w, BACKFILL_PAGE, &mut out)?;
            Ok((w, out, more))
        })
        .await;
        let Some((w, fixes, more)) = page else {
            let _ = done.send(Err(CommandError::Failed(
                "the local history could not be read".into(),
            )));
            return;
        };
        window = w;
        for chunk in fixes.chunks(per_message) {
            let numbered: Vec<(u64, Fix)> = chunk
                .iter()
                .enumerate()
                .map(|(i, f)| (sent + i as u64, *f))
                .collect();
            let encoded = payload::encode(
                &FixBatch {
                    device: &settings.device.id,
                    stream: &stream,
                    fixes: &numbered,
                },
                BACKFILL_MESSAGE_BYTES,
            );
            for m in encoded.messages {
                let n = m.seqs.len() as u64;
                next_at += every * u32::try_from(n).unwrap_or(u32::MAX);
                let Some(bytes) = with_request(&m.payload, &id) else {
                    continue;
                };
                // Behind the live fixes: a message goes only while the buffer has nothing
                // pending for the uplink.
                while board.read().buffer.depth > 0 {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(LIVE_FIRST_POLL) => {}
                    }
                }
                if out.send(bytes).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(next_at) => {}
                }
            }
            sent += chunk.len() as u64;
        }
        if !more || fixes.is_empty() {
            break;
        }
    }
    let _ = done.send(Ok(json!({"fixes": sent})));
}

/// A fixes message with `"request": id` added.
fn with_request(message: &[u8], id: &str) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(message).ok()?;
    v.as_object_mut()?.insert("request".into(), Value::from(id));
    serde_json::to_vec(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::store::Store;
    use crate::uplink::payload::tests::fix;

    /// Live fixes first: with fixes pending for the uplink a backfill sends nothing, for as
    /// long as they wait (a minute of the paused clock here, where without the rule the
    /// next message was due within a second), and it goes on once they are gone.
    #[tokio::test(start_paused = true)]
    async fn a_backfill_waits_while_live_fixes_are_pending_and_goes_on_when_none_are() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = crate::config::Config::default();
        raw.buffer.path = dir.path().join("buffer.db");
        let settings = crate::config::check(&raw).unwrap();
        let board = StatusBoard::default();
        let mut store = Store::open(settings.buffer.clone(), board.clone(), Instant::now());
        // A drive of the last 100 seconds (the history keeps keep_days back from now).
        let now_ms = crate::clock::Clock::default().utc_ms();
        let recent = |i: i64| Fix {
            time_ms: now_ms - 100_000 + i * 1000,
            ..fix(i)
        };
        for i in 0..100 {
            store.remember(&recent(i), Instant::now());
        }
        store.commit().unwrap();
        let store = SharedStore::new(store);
        let (out_tx, mut out) = mpsc::channel(8);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let first = recent(0).time_ms;
        let task = tokio::spawn(republish(
            store,
            board.clone(),
            settings.clone(),
            "b-1".into(),
            (first, first + 100_000, u64::MAX),
            out_tx,
            done_tx,
            CancellationToken::new(),
        ));
        // Nothing pending: the first message (50 of the page's 100 fixes) goes.
        let one: Value = serde_json::from_slice(&out.recv().await.unwrap()).unwrap();
        assert_eq!(one["request"], "b-1");
        assert_eq!(one["fixes"].as_array().map(Vec::len), Some(50));
        // Live fixes wait for the uplink: the second message, due a quarter second on at
        // backfill_rate 200, does not go.
        board.buffer(|b| b.depth = 3);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            out.try_recv().is_err(),
            "a backfill message went past live fixes"
        );
        // They are sent: the backfill goes on and ends.
        board.buffer(|b| b.depth = 0);
        let two: Value = serde_json::from_slice(&out.recv().await.unwrap()).unwrap();
        assert_eq!(two["fixes"].as_array().map(Vec::len), Some(50));
        assert_eq!(done.await.unwrap().unwrap(), json!({"fixes": 100}));
        task.await.unwrap();
    }
}
