//! Appending: lock, read the chain head, recover a torn tail, rotate, write
//! one line in one `write`, fsync, unlock; then sign and mirror.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::files::{open_regular, read_line, rotated_name, rotated_siblings, split, Line};
use super::format::{checkpoint_message, now_ts, parse, seal, GENESIS};
use super::settings::{AuditSettings, Mirror};
use super::AuditError;
use crate::keys::{key_id, load_signing_key};

/// How far back the writer looks for the last complete entry before it
/// declares the file unusable (a real log never has this much garbage).
const MAX_TAIL_SCAN: u64 = 64 << 20;
/// The largest entry the writer appends: a longer one would leave the next append unable
/// to find the last complete entry. (Config limits keep real entries far below it.)
pub(crate) const MAX_ENTRY_BYTES: usize = (MAX_TAIL_SCAN / 2) as usize;

/// The last complete entry: what the next one chains from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: String,
}

impl Head {
    fn genesis() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }
}

/// What one locked transaction wrote.
struct Written {
    hashes: Vec<String>,
    lines: Vec<Vec<u8>>,
}

/// An open audit log. One per process; each `append` is an independent,
/// locked transaction, so any number of processes may share the file.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    settings: AuditSettings,
    signer: Option<SigningKey>,
    /// The file was created by `open`: its directory entry needs an fsync.
    created: bool,
    /// What this handle's last adoption recorded, until [`AuditLog::take_adopted`].
    adopted: Option<Value>,
}

/// Opens the log for append, creating it if absent. A symlink at the path is refused,
/// not followed (whoever can write the directory could aim it at any file upm may
/// write), and a FIFO does not block the open (O_NONBLOCK; it is then refused as not
/// a regular file; on a regular file the flag changes nothing).
fn open_rw(path: &Path) -> Result<(File, bool), AuditError> {
    let opts = |create_new: bool| {
        let mut o = OpenOptions::new();
        o.read(true).append(true).mode(0o600);
        if create_new {
            o.create_new(true);
        }
        o.custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK);
        o
    };
    let open_err = |source: io::Error| {
        if source.raw_os_error() == Some(libc::ELOOP) {
            AuditError::NotRegular {
                path: path.to_path_buf(),
            }
        } else {
            AuditError::Open {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    let (file, created) = match opts(true).open(path) {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            (opts(false).open(path).map_err(open_err)?, false)
        }
        Err(e) => return Err(open_err(e)),
    };
    let meta = file.metadata().map_err(open_err)?;
    if !meta.file_type().is_file() {
        return Err(AuditError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    Ok((file, created))
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the fd number, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Whether `path` itself (not what a symlink there names) is the open file.
fn same_inode(file: &File, path: &Path) -> io::Result<bool> {
    let a = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(b) => Ok(a.dev() == b.dev() && a.ino() == b.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// What the end of a file holds.
enum Tail {
    /// The last complete entry, and the bytes after it (a torn tail, or lines that are
    /// not entries).
    Entry(Head, Vec<u8>),
    /// No entry in the whole file, whose bytes these are.
    None(Vec<u8>),
    /// No entry in the last [`MAX_TAIL_SCAN`] bytes of a larger file.
    NoneNearTheEnd,
}

/// The last complete entry of a file of `len` bytes, and what follows it.
fn read_tail(file: &File, len: u64) -> io::Result<Tail> {
    let mut n = len.min(4096);
    loop {
        let start = len - n;
        let buf = read_at(file, start, n)?;
        let mut end = buf.len();
        let found_start = loop {
            // `end` is the exclusive end of the bytes still unexamined.
            let Some(nl) = buf[..end].iter().rposition(|&b| b == b'\n') else {
                break start == 0;
            };
            let line_start = match buf[..nl].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if start == 0 => 0,
                None => break false,
            };
            if let Some(p) = parse(&buf[line_start..nl]) {
                let head = Head {
                    seq: p.seq,
                    hash: p.hash_str(),
                };
                return Ok(Tail::Entry(head, buf[nl + 1..].to_vec()));
            }
            end = line_start;
        };
        if found_start {
            return Ok(Tail::None(buf));
        }
        if n >= MAX_TAIL_SCAN {
            return Ok(Tail::NoneNearTheEnd);
        }
        n = len.min(n * 4);
    }
}

/// Reads `[pos, end)` of a file with `pread`: the fd's own offset is the append's.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Whether lines are what UPM's `configure_logging` wrote: its JSON formatter's objects
/// (`level` and `message`, or its fallback's `error` and `original_message`), its
/// human-readable formatter's `HH:MM:SS - LEVEL - ...`, its encrypted formatter's Fernet
/// tokens; after a human-readable line, the further lines of a message that held
/// newlines. The first line must be one of UPM's own.
#[derive(Default)]
struct UpmShape {
    after_text: bool,
}

impl UpmShape {
    fn accepts(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if is_upm_text_line(line) {
            self.after_text = true;
            return true;
        }
        if is_upm_json_line(line) || is_fernet_token(line) {
            self.after_text = false;
            return true;
        }
        // The rest of a human-readable message that held newlines.
        self.after_text
    }
}

fn is_upm_json_line(line: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Map<String, Value>>(line) else {
        return false;
    };
    let has = |k: &str| v.get(k).is_some_and(Value::is_string);
    (has("level") && has("message")) || (has("error") && has("original_message"))
}

fn is_upm_text_line(line: &[u8]) -> bool {
    let time = line.get(..8).is_some_and(|t| {
        t.iter().enumerate().all(|(i, c)| {
            if i % 3 == 2 {
                *c == b':'
            } else {
                c.is_ascii_digit()
            }
        })
    });
    let Some(rest) = line.get(8..).and_then(|r| r.strip_prefix(b" - ")) else {
        return false;
    };
    let level = rest.iter().take_while(|c| c.is_ascii_uppercase()).count();
    time && matches!(
        &rest[..level],
        b"DEBUG" | b"INFO" | b"WARNING" | b"ERROR" | b"CRITICAL"
    ) && rest[level..].starts_with(b" ")
}

fn is_fernet_token(line: &[u8]) -> bool {
    line.starts_with(b"gAAAAA")
        && line
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'='))
}

/// The foreign prefix an `adopted` entry records: every byte before it.
struct Adoption {
    /// The file's bytes, plus the `\n` upm adds when they do not end with one.
    bytes: u64,
    sha256: String,
    newline_added: bool,
    by: &'static str,
}

fn fsync_dir(path: &Path) -> io::Result<()> {
    let (dir, _) = split(path)?;
    File::open(dir)?.sync_all()
}

impl AuditLog {
    /// Opens (creating with mode 0600 if absent) the log for append. Fails
    /// when it cannot be opened for append, so the caller refuses to run the
    /// plugin rather than run it unaudited.
    pub fn open(path: &Path, settings: &AuditSettings) -> Result<AuditLog, AuditError> {
        settings.validate()?;
        let signer = match &settings.signing_key {
            Some(k) => Some(load_signing_key(k)?),
            None => None,
        };
        let (file, created) = open_rw(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            settings: settings.clone(),
            signer,
            created,
            adopted: None,
        })
    }

    /// The foreign prefix this handle adopted (once per log, ever), for the result of
    /// the call whose append did it: `path`, `bytes`, `sha256`, `adopted_by`,
    /// `request_id`.
    pub fn take_adopted(&mut self) -> Option<Value> {
        self.adopted.take()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn settings(&self) -> &AuditSettings {
        &self.settings
    }

    /// Appends one entry durably and returns its hash. An error means the
    /// entry is NOT durable (and nothing partial was left behind if the
    /// file could be truncated back).
    pub fn append(&mut self, entry: Map<String, Value>) -> Result<String, AuditError> {
        let mut hashes = self.append_all(vec![entry])?;
        Ok(hashes.pop().unwrap_or_default())
    }

    /// Appends entries in order in one transaction — one `write`, one `fdatasync` —
    /// and returns their hashes. All or none: an error means none is durable. This is
    /// what makes group commit possible for concurrent calls (`run --jsonl --parallel`).
    pub fn append_all(
        &mut self,
        mut entries: Vec<Map<String, Value>>,
    ) -> Result<Vec<String>, AuditError> {
        let mut first_id = None;
        for entry in &mut entries {
            let request_id = match entry.get("request_id") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(AuditError::Entry {
                        field: "request_id",
                        reason: "must be a non-empty string".into(),
                    })
                }
            };
            if !matches!(entry.get("event"), Some(Value::String(_))) {
                return Err(AuditError::Entry {
                    field: "event",
                    reason: "must be a string".into(),
                });
            }
            entry.entry("ts").or_insert_with(|| Value::String(now_ts()));
            first_id.get_or_insert(request_id);
        }
        let Some(request_id) = first_id else {
            return Ok(Vec::new());
        };
        let written = self.transact(&request_id, entries)?;
        self.mirror(&written.lines);
        Ok(written.hashes)
    }

    fn checkpoint_due(&self, first: u64, last: u64) -> bool {
        let n = self.settings.sign_every;
        self.signer.is_some() && (first == 1 || (first.saturating_sub(1)) / n != last / n)
    }

    /// The checkpoint signing `head`, when one is due: written in the same `write` as
    /// the entries it covers, so no crash can leave them durable and unsigned.
    fn checkpoint(&self, request_id: &str, head: &Head) -> Option<Map<String, Value>> {
        let signer = self.signer.as_ref()?;
        let sign_every = self.settings.sign_every;
        let sig = signer.sign(&checkpoint_message(head.seq, &head.hash, sign_every));
        let mut m = Map::new();
        m.insert("event".into(), "checkpoint".into());
        m.insert("request_id".into(), request_id.into());
        m.insert("ts".into(), now_ts().into());
        m.insert("signed_seq".into(), head.seq.into());
        m.insert("signed_hash".into(), head.hash.clone().into());
        m.insert("sign_every".into(), sign_every.into());
        m.insert("key_id".into(), key_id(&signer.verifying_key()).into());
        m.insert("sig".into(), hex::encode(sig.to_bytes()).into());
        Some(m)
    }

    /// Locks the file that is currently at `path` (reopening if another
    /// process rotated it away while we waited).
    fn lock_current(&mut self) -> Result<(), AuditError> {
        let lock_err = |path: &Path, source| AuditError::Lock {
            path: path.to_path_buf(),
            source,
        };
        for _ in 0..1000 {
            flock(&self.file, libc::LOCK_EX).map_err(|e| lock_err(&self.path, e))?;
            if same_inode(&self.file, &self.path).map_err(|e| lock_err(&self.path, e))? {
                return Ok(());
            }
            let _ = flock(&self.file, libc::LOCK_UN);
            let (file, created) = open_rw(&self.path)?;
            self.file = file;
            self.created |= created;
        }
        Err(lock_err(
            &self.path,
            io::Error::other("the file kept being replaced while waiting for the lock"),
        ))
    }

    /// One locked transaction: chains the entries to the head, writes them (after a
    /// recovery entry for a torn tail, and before a checkpoint when one is due), fsyncs.
    fn transact(
        &mut self,
        request_id: &str,
        entries: Vec<Map<String, Value>>,
    ) -> Result<Written, AuditError> {
        self.lock_current()?;
        let result = self.transact_locked(request_id, entries);
        // Closing the fd would release the lock too; unlock explicitly so a
        // long-lived AuditLog does not hold it.
        let _ = flock(&self.file, libc::LOCK_UN);
        result
    }

    fn transact_locked(
        &mut self,
        request_id: &str,
        entries: Vec<Map<String, Value>>,
    ) -> Result<Written, AuditError> {
        let read_err = |path: &Path, source| AuditError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = self
            .file
            .metadata()
            .map_err(|e| read_err(&self.path, e))?
            .len();
        let tail = read_tail(&self.file, len).map_err(|e| read_err(&self.path, e))?;
        let (head, torn, adoption) = match tail {
            Tail::Entry(h, after) => (h, after, None),
            // Part of one line and nothing else: a torn first write (sealed below).
            Tail::None(bytes) if !bytes.contains(&b'\n') => (self.head_of_rotated()?, bytes, None),
            Tail::None(_) | Tail::NoneNearTheEnd => {
                let adoption = self.adoption(len)?;
                (Head::genesis(), Vec::new(), Some(adoption))
            }
        };
        // A crash tears at most the last line: whole lines after the last entry were
        // put there by someone else, and a recovery entry would vouch for them.
        if torn.contains(&b'\n') {
            return Err(AuditError::Corrupt {
                path: self.path.clone(),
                reason: "lines after the last entry are not entries (a crash leaves at most \
                         a partial last line); refusing to seal them"
                    .into(),
            });
        }
        let mut lines = Vec::new();
        let mut head = head;
        let mut first_seq = next_seq(&self.path, &head)?;
        if let Some(a) = &adoption {
            let (line, hash) = seal(first_seq, &head.hash, &adoption_fields(request_id, a))?;
            let mut bytes = Vec::with_capacity(line.len() + 1);
            if a.newline_added {
                bytes.push(b'\n');
            }
            bytes.extend_from_slice(&line);
            lines.push(bytes);
            head = Head {
                seq: first_seq,
                hash,
            };
        }
        if !torn.is_empty() {
            let (line, hash) = seal(
                next_seq(&self.path, &head)?,
                &head.hash,
                &recovery_fields(request_id, &torn),
            )?;
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.push(b'\n');
            bytes.extend_from_slice(&line);
            lines.push(bytes);
            head = Head {
                seq: head.seq + 1,
                hash,
            };
            first_seq = head.seq;
        }
        let mut new_lines = Vec::new();
        let mut hashes = Vec::new();
        let mut link = head.clone();
        for entry in entries {
            let (line, hash) = seal(next_seq(&self.path, &link)?, &link.hash, &entry)?;
            if line.len() > MAX_ENTRY_BYTES {
                return Err(AuditError::Entry {
                    field: "(whole entry)",
                    reason: format!(
                        "would take {} bytes, more than the {MAX_ENTRY_BYTES} an entry may",
                        line.len()
                    ),
                });
            }
            link = Head {
                seq: link.seq + 1,
                hash: hash.clone(),
            };
            new_lines.push(line);
            hashes.push(hash);
        }
        let last_seq = link.seq;
        if self.checkpoint_due(first_seq, last_seq) {
            if let Some(cp) = self.checkpoint(request_id, &link) {
                let (line, _) = seal(next_seq(&self.path, &link)?, &link.hash, &cp)?;
                new_lines.push(line);
            }
        }
        let new_bytes = new_lines.concat();
        let cur_len = len + lines.iter().map(|l| l.len() as u64).sum::<u64>();
        // With rotation on, the adopted lines and their entry get a rotated file of
        // their own at once (the file's first line is not an entry: no day to rotate by).
        let rotate = (adoption.is_some() && self.settings.rotate.is_some())
            || self.rotation_due(cur_len, new_bytes.len() as u64);
        if rotate {
            if !lines.is_empty() {
                self.write_durably(len, &lines.concat())?;
            }
            match self.rotate(&new_bytes) {
                Ok(()) => {}
                // Rotating is housekeeping: when it cannot happen (no inode for the new
                // file, say) and nothing was moved, the entries go into the current file
                // (the chain is the same either way) and the next append tries again. A
                // call that already ran must not fail for want of a new file.
                Err(RotateFailure::Untouched(e)) => {
                    tracing::warn!(
                        "{e}; the entry was appended to the current file instead, and rotation \
                         will be tried again at the next append"
                    );
                    self.write_durably(cur_len, &new_bytes)?;
                }
                Err(RotateFailure::Unknown(e)) => return Err(e),
            }
        } else {
            let mut all = lines.concat();
            all.extend_from_slice(&new_bytes);
            self.write_durably(len, &all)?;
        }
        if self.created {
            fsync_dir(&self.path).map_err(|source| AuditError::Write {
                path: self.path.clone(),
                source,
            })?;
            self.created = false;
        }
        lines.extend(new_lines);
        if let Some(a) = adoption {
            self.adopted = Some(serde_json::json!({
                "path": self.path,
                "bytes": a.bytes,
                "sha256": a.sha256,
                "newline_added": a.newline_added,
                "adopted_by": a.by,
                "request_id": request_id,
            }));
        }
        Ok(Written { hashes, lines })
    }

    /// One `write` on the O_APPEND fd, then fdatasync. On failure the file
    /// is cut back to `old_len` so no torn bytes stay behind when possible.
    fn write_durably(&mut self, old_len: u64, bytes: &[u8]) -> Result<(), AuditError> {
        let res = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = res {
            let _ = self.file.set_len(old_len);
            return Err(AuditError::Write {
                path: self.path.clone(),
                source,
            });
        }
        Ok(())
    }

    /// A file of `len` bytes without a single entry: the log UPM (or another program)
    /// wrote there. Adopted, when the settings allow it, as the foreign prefix of the
    /// chain: its length and SHA-256 go into the first entry. Refused when any line
    /// could be an entry (upm's entries were there: what is left is not a log to adopt),
    /// when the log has rotated files (the current file lost its entries), or when a
    /// line is longer than any entry (`verify` could not read past it).
    fn adoption(&self, len: u64) -> Result<Adoption, AuditError> {
        let corrupt = |reason: String| AuditError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let Some(by) = self.settings.adoption() else {
            return Err(corrupt(
                "it holds lines but no valid audit entry (not an audit log?); upm adopts a log \
                 it did not write (such as the one UPM wrote) only when UPM_LOG_FILE names it \
                 or the config sets \"audit\": {\"adopt_foreign\": true}"
                    .into(),
            ));
        };
        let read_err = |source| AuditError::Read {
            path: self.path.clone(),
            source,
        };
        if !rotated_siblings(&self.path).map_err(read_err)?.is_empty() {
            return Err(corrupt(
                "it holds lines but no valid audit entry, and rotated files of this log exist \
                 (its entries were removed?); only a log without rotated files is adopted"
                    .into(),
            ));
        }
        let mut r = io::BufReader::with_capacity(
            1 << 20,
            ReadAt {
                file: &self.file,
                pos: 0,
                end: len,
            },
        );
        let mut hasher = Sha256::new();
        let mut buf = Vec::new();
        let mut number = 0u64;
        let mut last = None;
        let mut shape = UpmShape::default();
        // The environment may name any file upm can write: through it, only what UPM's
        // logging wrote is adopted, never (say) a shell's profile; the config may allow any.
        let check_shape = by == "UPM_LOG_FILE";
        loop {
            number += 1;
            let kind = read_line(&mut r, &mut buf, MAX_ENTRY_BYTES).map_err(read_err)?;
            match kind {
                Line::Eof => break,
                Line::TooLong => {
                    return Err(corrupt(format!(
                        "it holds no audit entry, and its line {number} is longer than any entry \
                         ({MAX_ENTRY_BYTES} bytes); not adopted"
                    )))
                }
                Line::Complete | Line::Partial => {}
            }
            if parse(&buf).is_some() {
                return Err(corrupt(format!(
                    "its line {number} has the shape of an audit entry among lines that are not \
                     entries; a log that held upm's entries is not adopted"
                )));
            }
            if check_shape && !shape.accepts(&buf) {
                return Err(corrupt(format!(
                    "it holds lines but no valid audit entry, and its line {number} is not UPM's \
                     logging output; through UPM_LOG_FILE upm adopts only the log UPM wrote (the \
                     config's \"audit\": {{\"adopt_foreign\": true}} adopts any)"
                )));
            }
            hasher.update(&buf);
            if kind == Line::Complete {
                hasher.update(b"\n");
            }
            last = Some(kind);
        }
        let newline_added = last == Some(Line::Partial);
        if newline_added {
            hasher.update(b"\n");
        }
        Ok(Adoption {
            bytes: len + u64::from(newline_added),
            sha256: hex::encode(hasher.finalize()),
            newline_added,
            by,
        })
    }

    /// The chain head when the current file is empty: the newest rotated
    /// file's last entry (the current file was removed or never written).
    fn head_of_rotated(&self) -> Result<Head, AuditError> {
        let siblings = rotated_siblings(&self.path).map_err(|source| AuditError::Read {
            path: self.path.clone(),
            source,
        })?;
        let Some(newest) = siblings.last() else {
            return Ok(Head::genesis());
        };
        let read_err = |source| AuditError::Read {
            path: newest.clone(),
            source,
        };
        let f = open_regular(newest).map_err(read_err)?;
        let len = f.metadata().map_err(read_err)?.len();
        Ok(match read_tail(&f, len).map_err(read_err)? {
            Tail::Entry(head, _) => head,
            Tail::None(_) | Tail::NoneNearTheEnd => Head::genesis(),
        })
    }

    fn rotation_due(&self, cur_len: u64, line_len: u64) -> bool {
        let Some(rot) = &self.settings.rotate else {
            return false;
        };
        if cur_len == 0 {
            return false;
        }
        if rot.max_bytes.is_some_and(|max| cur_len + line_len > max) {
            return true;
        }
        rot.daily
            && self
                .first_entry_day()
                .is_some_and(|day| day != chrono::Utc::now().format("%Y-%m-%d").to_string())
    }

    /// `YYYY-MM-DD` of the first entry's `ts`, if it can be read; `""` (due at once)
    /// when the file begins with a line that is not an entry: adopted lines that a
    /// crash kept from getting their rotated file at adoption.
    fn first_entry_day(&self) -> Option<String> {
        let len = self.file.metadata().ok()?.len();
        let mut buf = read_at(&self.file, 0, len.min(4096)).ok()?;
        if !buf.contains(&b'\n') {
            buf = read_at(&self.file, 0, len.min(1 << 20)).ok()?;
        }
        let nl = buf.iter().position(|&b| b == b'\n')?;
        if parse(&buf[..nl]).is_none() {
            return Some(String::new());
        }
        let v: Value = serde_json::from_slice(&buf[..nl]).ok()?;
        v.get("ts")?.as_str()?.get(..10).map(str::to_string)
    }

    /// Moves the current file aside and atomically puts a new file holding
    /// `first_lines` in its place: `link(path, rotated)` then
    /// `rename(tmp, path)`, so `path` is never missing or empty.
    ///
    /// Fails with [`RotateFailure::Untouched`] when the current file is still the only
    /// name of the log (what was made on the way is removed again), so the entries may
    /// go into it instead.
    fn rotate(&mut self, first_lines: &[u8]) -> Result<(), RotateFailure> {
        use RotateFailure::Untouched;
        let rot_err = |path: &Path, source| AuditError::Rotate {
            path: path.to_path_buf(),
            source,
        };
        let (dir, base) = split(&self.path).map_err(|e| Untouched(rot_err(&self.path, e)))?;
        let tmp = dir.join(format!(".{base}.rotate"));
        let old_meta = self
            .file
            .metadata()
            .map_err(|e| Untouched(rot_err(&self.path, e)))?;
        // The temp name may be left over from a crash, or planted: a symlink there
        // would make upm truncate, fill and chown whatever file it names. Remove the
        // name (never what it points to) and create a fresh file; if something was
        // planted again in between, creation fails and so does the append.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Untouched(rot_err(&tmp, e))),
        }
        let mut f =
            crate::files::create_new(&tmp, 0o600).map_err(|e| Untouched(rot_err(&tmp, e)))?;
        // From here on a failure removes the temporary file (and the rotated name, once
        // made) before it reports the log untouched.
        let undo = |err: AuditError, linked: Option<&Path>| {
            let _ = std::fs::remove_file(&tmp);
            match linked.map(std::fs::remove_file) {
                None | Some(Ok(())) => Untouched(err),
                // A second name of the current file stays: appending to it would put the
                // entries in what verify reads as a rotated file too.
                Some(Err(_)) => RotateFailure::Unknown(err),
            }
        };
        let _ = f.set_permissions(std::fs::Permissions::from_mode(old_meta.mode() & 0o777));
        let _ = std::os::unix::fs::fchown(&f, Some(old_meta.uid()), Some(old_meta.gid()));
        if let Err(e) = f.write_all(first_lines).and_then(|()| f.sync_all()) {
            return Err(undo(rot_err(&tmp, e), None));
        }
        drop(f);
        if let Err(e) = self.drop_stale_links(&old_meta) {
            return Err(undo(e, None));
        }
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let mut counter = 0;
        let linked = loop {
            let name = match rotated_name(&self.path, &stamp, counter) {
                Ok(n) => n,
                Err(e) => return Err(undo(rot_err(&self.path, e), None)),
            };
            match std::fs::hard_link(&self.path, &name) {
                Ok(()) => break name,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && counter < 10_000 => {
                    counter += 1
                }
                Err(e) => return Err(undo(rot_err(&name, e), None)),
            }
        };
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            return Err(undo(rot_err(&self.path, e), Some(&linked)));
        }
        // The entries are in the new file now: a failure here leaves them there.
        fsync_dir(&self.path).map_err(|e| RotateFailure::Unknown(rot_err(&self.path, e)))?;
        // Keep the old (still locked) fd until the transaction unlocks it;
        // the next transaction reopens `path` via `lock_current`.
        Ok(())
    }

    /// A crash between `link` and `rename` leaves a rotated name that is a
    /// second link to the current file: remove it before linking again.
    fn drop_stale_links(&self, cur: &std::fs::Metadata) -> Result<(), AuditError> {
        if cur.nlink() < 2 {
            return Ok(());
        }
        let siblings = rotated_siblings(&self.path).map_err(|source| AuditError::Rotate {
            path: self.path.clone(),
            source,
        })?;
        for s in siblings {
            if let Ok(m) = std::fs::metadata(&s) {
                if m.dev() == cur.dev() && m.ino() == cur.ino() {
                    std::fs::remove_file(&s).map_err(|source| AuditError::Rotate {
                        path: s.clone(),
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Best effort, after the entry is durable.
    fn mirror(&self, lines: &[Vec<u8>]) {
        match self.settings.mirror {
            None => {}
            Some(Mirror::Stderr) => {
                let mut err = io::stderr().lock();
                for l in lines {
                    let _ = err.write_all(l.strip_prefix(b"\n").unwrap_or(l));
                }
            }
            Some(Mirror::Syslog) => {
                let Ok(sock) = UnixDatagram::unbound() else {
                    return;
                };
                let pid = std::process::id();
                for l in lines {
                    let l = l.strip_prefix(b"\n").unwrap_or(l);
                    let l = l.strip_suffix(b"\n").unwrap_or(l);
                    // <86> = facility authpriv (10) * 8 + severity info (6).
                    let mut msg = format!("<86>upm-audit[{pid}]: ").into_bytes();
                    msg.extend_from_slice(l);
                    let _ = sock.send_to(&msg, "/dev/log");
                }
            }
        }
    }
}

/// Why [`AuditLog::rotate`] failed, and whether the entries may go elsewhere.
enum RotateFailure {
    /// Nothing was moved: the current file is still the log's only file at its path.
    Untouched(AuditError),
    /// The entries may be in the new file, or the current file has a second name.
    Unknown(AuditError),
}

/// The seq after `head`'s: a forged head at `u64::MAX` must not wrap the chain to 0.
fn next_seq(path: &Path, head: &Head) -> Result<u64, AuditError> {
    head.seq.checked_add(1).ok_or_else(|| AuditError::Corrupt {
        path: path.to_path_buf(),
        reason: "its last entry claims the largest seq there is".into(),
    })
}

fn adoption_fields(request_id: &str, a: &Adoption) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("event".into(), "adopted".into());
    m.insert("request_id".into(), request_id.into());
    m.insert("ts".into(), now_ts().into());
    m.insert("foreign_bytes".into(), a.bytes.into());
    m.insert("foreign_sha256".into(), a.sha256.clone().into());
    m.insert("newline_added".into(), a.newline_added.into());
    m.insert("adopted_by".into(), a.by.into());
    m
}

fn recovery_fields(request_id: &str, torn: &[u8]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("event".into(), "recovered".into());
    m.insert("request_id".into(), request_id.into());
    m.insert("ts".into(), now_ts().into());
    m.insert("torn_bytes".into(), (torn.len() as u64).into());
    m.insert(
        "torn_sha256".into(),
        hex::encode(Sha256::digest(torn)).into(),
    );
    m
}

#[cfg(test)]
mod tests;
