//! TLS 1.3 session tickets kept across a restart, so that the first connection of a trip
//! resumes the last session instead of paying a full handshake (the broker's certificate
//! chain, a signature, an extra flight: about 2 KB on the wire; README, "Bytes on the wire").
//!
//! In: the tickets rustls receives after a handshake and takes for the next one (this is the
//! `ClientSessionStore` of a client configuration made by [`super::client_config`]). Out:
//! the ticket file beside the buffer (`[buffer] path` + `.tls-tickets`, as
//! `config::BufferSettings::tls_tickets` names it), read once, at the
//! first handshake of a configuration (never when one is only built: `check-config` and a
//! SIGHUP's comparison do not touch it), and written after every change by a thread of its
//! own, never on the runtime's threads: owner-only (0600), to a temporary file that is synced
//! and renamed over the old one, so a power cut leaves the old file or the new one.
//!
//! What it must never do: log or return a ticket or its secret (the file is as sensitive as
//! the client key: whoever holds a ticket can resume as the broker's peer until it expires);
//! hand out a ticket twice (rustls' rule); use a ticket made under other trust: the file
//! carries a SHA-256 of the trust anchors, the client certificate chain and the
//! `server_name` override its tickets were made under, and a file made under others is
//! dropped whole. A file that does not read cleanly (too large, cut short, not ours, readable
//! by others than its owner) is ignored with `MQTT_TLS_TICKETS`, never a failure to connect: the handshake is
//! then a full one and the file is replaced. Bounded: [`MAX_TICKETS`] tickets, a file of at
//! most [`MAX_FILE_BYTES`]. TLS 1.2 sessions and key-exchange hints stay in memory, as rustls
//! keeps them.

use crate::error::{Classified, ErrorClass};
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, NamedGroup, SupportedCipherSuite};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use tracing::{debug, info, warn};

/// Tickets kept at most, for all server names together (the newest; a broker sends two after
/// a full handshake and one after each resumption, and each is used once).
pub const MAX_TICKETS: usize = 8;
/// The largest ticket file read or written; a ticket that would not fit is not kept on disk.
pub const MAX_FILE_BYTES: usize = 64 * 1024;
/// What the file starts with: its kind and layout.
const MAGIC: &[u8; 8] = b"GATLSTK1";
/// Why the ticket file was not used or not written: a warning, never a failure to connect.
#[derive(Debug, thiserror::Error)]
pub enum TicketFileError {
    #[error("TLS ticket file {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("TLS ticket file {} ignored: {why}", .path.display())]
    Unusable { path: PathBuf, why: &'static str },
}

impl Classified for TicketFileError {
    fn code(&self) -> &'static str {
        "MQTT_TLS_TICKETS"
    }

    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// A SHA-256 of what a ticket's trust rests on: the trust anchors, the client certificate
/// chain and the `server_name` override.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Binding([u8; 32]);

impl Binding {
    /// The binding of these parts (each labelled and length-prefixed, so no two lists of
    /// parts hash alike); `None` if ring's SHA-256 were not there (it always is).
    pub fn of<'a>(parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<Binding> {
        let SupportedCipherSuite::Tls13(suite) =
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        else {
            return None;
        };
        let mut h = suite.common.hash_provider.start();
        for (label, bytes) in [("gps-agent TLS tickets", &MAGIC[..])]
            .into_iter()
            .chain(parts)
        {
            for piece in [label.as_bytes(), bytes] {
                h.update(&(piece.len() as u64).to_be_bytes());
                h.update(piece);
            }
        }
        let mut b = [0u8; 32];
        for (d, s) in b.iter_mut().zip(h.finish().as_ref()) {
            *d = *s;
        }
        Some(Binding(b))
    }
}

/// The store rustls asks for tickets; see the module's doc.
pub struct TicketStore {
    shared: Arc<Shared>,
    /// TLS 1.2 sessions and key-exchange hints, in memory only.
    memory: ClientSessionMemoryCache,
}

struct Shared {
    file: PathBuf,
    binding: Binding,
    /// The configuration whose verifier and client-certificate resolver a ticket read from
    /// the file is bound to (set once it is made; the store is part of it).
    config: OnceLock<Weak<ClientConfig>>,
    state: Mutex<State>,
    /// Signalled when a write ends.
    written: Condvar,
}

#[derive(Default)]
struct State {
    /// The file was read (or found unusable): the tickets below are all there are.
    loaded: bool,
    /// Oldest first.
    tickets: VecDeque<(ServerName<'static>, Tls13ClientSessionValue)>,
    /// Changed since last written.
    dirty: bool,
    /// A writer thread is running.
    writing: bool,
}

impl TicketStore {
    /// A store keeping its tickets in `file`, for a configuration whose trust is `binding`.
    /// Nothing is read until the first handshake; [`TicketStore::bind`] must be called with
    /// the configuration once it is made.
    pub fn new(file: PathBuf, binding: Binding) -> TicketStore {
        TicketStore {
            shared: Arc::new(Shared {
                file,
                binding,
                config: OnceLock::new(),
                state: Mutex::new(State::default()),
                written: Condvar::new(),
            }),
            memory: ClientSessionMemoryCache::new(MAX_TICKETS),
        }
    }

    /// The configuration this store belongs to: tickets read from the file are bound to its
    /// verifier and client-certificate resolver.
    pub fn bind(&self, config: &Arc<ClientConfig>) {
        let _ = self.shared.config.set(Arc::downgrade(config));
    }

    /// Wait until every change so far is on disk (or its write failed).
    pub fn flush(&self) {
        let mut state = self.shared.lock();
        while state.dirty || state.writing {
            state = self
                .shared
                .written
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Tickets held now (for the tests and the log).
    pub fn len(&self) -> usize {
        self.shared.lock().tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a list of tickets, consistent at every step.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file's tickets, once: bound to the configuration, or dropped when made under
    /// other trust; a bad file is ignored with a warning.
    fn load(&self, state: &mut State) {
        if state.loaded {
            return;
        }
        state.loaded = true;
        let Some(config) = self.config.get().and_then(Weak::upgrade) else {
            return;
        };
        let bytes = match read_file(&self.file) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                warn_ticket_file(&e);
                return;
            }
        };
        match parse(&bytes) {
            Err(why) => warn_ticket_file(&TicketFileError::Unusable {
                path: self.file.clone(),
                why,
            }),
            Ok((binding, _)) if binding != self.binding => {
                info!(component = "mqtt", file = %self.file.display(),
                    "stored TLS tickets were made under another CA, client certificate or server name: dropped");
                let _ = std::fs::remove_file(&self.file);
            }
            Ok((_, entries)) => {
                for (name, value) in entries {
                    match config.read_tls13_ticket(value) {
                        Ok(ticket) => state.tickets.push_back((name, ticket)),
                        Err(_) => warn_ticket_file(&TicketFileError::Unusable {
                            path: self.file.clone(),
                            why: "a ticket this configuration cannot use",
                        }),
                    }
                }
                debug!(
                    component = "mqtt",
                    tickets = state.tickets.len(),
                    "stored TLS tickets read"
                );
            }
        }
        wipe(bytes);
    }

    /// The tickets as the file holds them; `None` when there are none. Newest kept first
    /// when they would not all fit.
    fn encode(&self, state: &State) -> Option<Vec<u8>> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        let mut size = MAGIC.len() + 32 + 1;
        for (name, ticket) in state.tickets.iter().rev() {
            let name = name.to_str().into_owned();
            let value = ticket.encode();
            let entry = 1 + name.len() + 2 + value.len();
            if name.len() > usize::from(u8::MAX)
                || value.len() > usize::from(u16::MAX)
                || size + entry > MAX_FILE_BYTES
            {
                wipe(value);
                continue;
            }
            size += entry;
            entries.push((name, value));
        }
        if entries.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.binding.0);
        out.push(entries.len() as u8);
        for (name, value) in entries.into_iter().rev() {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(&value);
            wipe(value);
        }
        Some(out)
    }

    /// Mark the tickets changed and have a writer thread save them (one at a time).
    fn changed(self: &Arc<Self>, state: &mut State) {
        state.dirty = true;
        if state.writing {
            return;
        }
        state.writing = true;
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tls-tickets".into())
            .spawn(move || shared.write_while_dirty());
        if let Err(source) = spawned {
            state.writing = false;
            warn_ticket_file(&TicketFileError::Io {
                path: self.file.clone(),
                source,
            });
        }
    }

    /// The writer thread: save until nothing changed since the last save.
    fn write_while_dirty(&self) {
        loop {
            let bytes = {
                let mut state = self.lock();
                if !state.dirty {
                    state.writing = false;
                    self.written.notify_all();
                    return;
                }
                state.dirty = false;
                self.encode(&state)
            };
            let result = match bytes {
                Some(bytes) => {
                    let r = write_atomically(&self.file, &bytes);
                    wipe(bytes);
                    r
                }
                None => match std::fs::remove_file(&self.file) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            if let Err(source) = result {
                warn_ticket_file(&TicketFileError::Io {
                    path: self.file.clone(),
                    source,
                });
            }
        }
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.memory.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.memory.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.memory.set_tls12_session(server_name, value);
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.memory.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.memory.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        let mut state = self.shared.lock();
        self.shared.load(&mut state);
        state.tickets.push_back((server_name, value));
        while state.tickets.len() > MAX_TICKETS {
            state.tickets.pop_front();
        }
        self.shared.changed(&mut state);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        let mut state = self.shared.lock();
        self.shared.load(&mut state);
        let newest = state.tickets.iter().rposition(|(n, _)| n == server_name)?;
        let (_, ticket) = state.tickets.remove(newest)?;
        self.shared.changed(&mut state);
        Some(ticket)
    }
}

/// Counts only: a ticket or its secret must never reach a log line.
impl fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketStore")
            .field("file", &self.shared.file)
            .field("tickets", &self.len())
            .finish_non_exhaustive()
    }
}

fn warn_ticket_file(e: &TicketFileError) {
    warn!(component = "mqtt", code = e.code(), class = e.class().as_str(), error = %e,
        "TLS tickets not kept across restarts this time; the next handshake is a full one");
}

/// The file's bytes; `None` when there is none. Unusable when larger than
/// [`MAX_FILE_BYTES`] or open to anyone but its owner (someone else may have put it there,
/// or read the secrets in it).
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, TicketFileError> {
    let io = |source| TicketFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let unusable = |why| TicketFileError::Unusable {
        path: path.to_path_buf(),
        why,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(unusable("not a regular file"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(unusable(
            "readable or writable by others than its owner (not 0600)",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > MAX_FILE_BYTES {
        wipe(bytes);
        return Err(unusable("larger than a ticket file can be"));
    }
    Ok(Some(bytes))
}

/// The binding and the `(server name, ticket bytes)` entries of a ticket file.
type Parsed<'a> = (Binding, Vec<(ServerName<'static>, &'a [u8])>);

fn parse(bytes: &[u8]) -> Result<Parsed<'_>, &'static str> {
    let mut r = Cursor(bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a ticket file of this agent");
    }
    let mut binding = [0u8; 32];
    binding.copy_from_slice(r.take(32)?);
    let count = usize::from(r.take(1)?[0]);
    if count > MAX_TICKETS {
        return Err("more tickets than are ever kept");
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(r.take(1)?[0]);
        let name = std::str::from_utf8(r.take(len)?).map_err(|_| "a server name is not text")?;
        let name = ServerName::try_from(name.to_owned()).map_err(|_| "a bad server name")?;
        let len = r.take(2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        entries.push((name, r.take(len)?));
    }
    if !r.0.is_empty() {
        return Err("bytes after the last ticket");
    }
    Ok((Binding(binding), entries))
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("cut short");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}

/// `bytes` at `path` or nothing changed: written owner-only to a temporary name beside it,
/// synced, renamed over it, and the directory synced.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Overwrite what held a ticket's secret before it is freed (best effort: no new crate).
fn wipe(mut bytes: Vec<u8>) {
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

#[cfg(test)]
mod tests;
