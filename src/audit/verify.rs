//! Verification: walks the rotated files then the current file, line by
//! line, with a prefix/suffix scan and one SHA-256 per line (no JSON parsing
//! except for the rare recovery and checkpoint lines).

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::files::{log_set, open_regular, read_line, Line};
use super::format::{checkpoint_message, parse, printable, seal, Parsed, GENESIS};
use super::writer::MAX_ENTRY_BYTES;
use super::AuditError;
use crate::keys::{key_id, load_verifying_key};

/// The first problem found, located by file and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    pub line: u64,
    pub seq: Option<u64>,
    /// e.g. "line 17 (seq 17): hash does not match its contents (altered)".
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every entry is present, unaltered and in order (and, with a key,
    /// every checkpoint is validly signed).
    Intact,
    /// Intact, except that the log ends with part of one line (no newline
    /// in it): a write torn by a crash. Not tampering; the next append
    /// records and seals them.
    TornTail {
        file: PathBuf,
        line: u64,
        bytes: u64,
    },
    Broken(Finding),
    /// The log could not be read at all.
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files walked, oldest first.
    pub files: Vec<PathBuf>,
    /// Complete entries checked before the walk ended.
    pub entries: u64,
    pub last_seq: Option<u64>,
    pub head: Option<String>,
    pub checkpoints_verified: u64,
    /// Things an auditor should see that do not break the chain.
    pub notes: Vec<String>,
    pub outcome: Outcome,
}

impl VerifyReport {
    /// 0 intact (a torn tail included: it is a crash, not tampering),
    /// 1 broken, 2 unreadable.
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            Outcome::Intact | Outcome::TornTail { .. } => 0,
            Outcome::Broken(_) => 1,
            Outcome::Unreadable(_) => 2,
        }
    }
}

/// Whoever can write the log chooses some of what a report quotes (a checkpoint's
/// `key_id`, file names): shown escaped, so that no report can rewrite itself on a
/// terminal (say, `BROKEN` into `intact`).
fn shown(path: &Path) -> String {
    printable(&path.display().to_string())
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let span = match self.last_seq {
            Some(s) => format!("seq {s}"),
            None => "no entries".into(),
        };
        match &self.outcome {
            Outcome::Intact => write!(
                f,
                "intact: {} entries in {} file(s), up to {span}, head {}",
                self.entries,
                self.files.len(),
                self.head.as_deref().unwrap_or(GENESIS)
            )?,
            Outcome::TornTail { file, line, bytes } => write!(
                f,
                "intact up to {span}, but {} line {line} is a torn write: {bytes} bytes that are not a \
                 complete entry, left by a crash during an append (not tampering; the next append \
                 records and seals them)",
                shown(file)
            )?,
            Outcome::Broken(fd) => write!(
                f,
                "BROKEN: {}: {}",
                shown(&fd.file),
                printable(&fd.message)
            )?,
            Outcome::Unreadable(why) => write!(f, "cannot verify: {}", printable(why))?,
        }
        if self.checkpoints_verified > 0 {
            write!(
                f,
                "\n{} checkpoint signature(s) verified",
                self.checkpoints_verified
            )?;
        }
        for n in &self.notes {
            write!(f, "\nnote: {}", printable(n))?;
        }
        Ok(())
    }
}

/// A gap in seq, classified once the next line is seen (reorder or removal).
struct Gap {
    file: usize,
    line: u64,
    seq: u64,
    expected: u64,
    first_in_file: bool,
}

/// Lines that are not entries, waiting for a recovery entry that names them (or, at
/// the start of the oldest file, an `adopted` entry).
struct Region {
    file: usize,
    line: u64,
    /// The first line and its newline: a recovery entry can account for no more, so
    /// later lines are counted, not kept (a log of garbage cannot fill memory).
    bytes: Vec<u8>,
    /// Every line's bytes and newline.
    len: u64,
    multi: bool,
    /// SHA-256 of every byte so far, for a region that starts the oldest file: the
    /// only place an `adopted` entry can account for.
    digest: Option<Sha256>,
}

struct Checker {
    files: Vec<PathBuf>,
    /// The keys a checkpoint may be signed with, and their ids; none: no check.
    keys: Vec<(VerifyingKey, String)>,
    expected_seq: u64,
    expected_prev: [u8; 64],
    last_entry: Option<(usize, u64)>,
    entries: u64,
    gap: Option<Gap>,
    region: Option<Region>,
    torn: Option<(usize, u64, u64)>,
    checkpoints: u64,
    /// Checkpoints seen without a key to check them with.
    unchecked_checkpoints: u64,
    last_checkpoint: Option<(usize, u64, u64, u64)>,
    notes: Vec<String>,
}

fn finding(file: &Path, line: u64, seq: Option<u64>, message: String) -> Finding {
    Finding {
        file: file.to_path_buf(),
        line,
        seq,
        message,
    }
}

/// Whole lines that are not entries at the end of the log. A crash tears at most the
/// last line (no newline in it), so these were written by someone else.
fn not_a_torn_write(file: &Path, line: u64) -> Finding {
    finding(
        file,
        line,
        None,
        format!(
            "line {line}: lines after the last entry that are not entries (added or altered; \
             a crash leaves at most a partial last line)"
        ),
    )
}

/// The `event` of an entry's line, parsed as jq would read it.
fn event_of(bytes: &[u8]) -> Option<String> {
    let v: Map<String, Value> = serde_json::from_slice(bytes).ok()?;
    v.get("event").and_then(Value::as_str).map(str::to_owned)
}

/// Substring search; `str::contains` is much faster than a naive window
/// scan, and the writer only ever writes UTF-8.
fn contains(hay: &[u8], needle: &str) -> bool {
    match std::str::from_utf8(hay) {
        Ok(s) => s.contains(needle),
        Err(_) => hay.windows(needle.len()).any(|w| w == needle.as_bytes()),
    }
}

impl Checker {
    fn new(files: Vec<PathBuf>, keys: Vec<VerifyingKey>) -> Checker {
        let mut genesis = [0u8; 64];
        genesis.copy_from_slice(GENESIS.as_bytes());
        Checker {
            files,
            keys: keys
                .into_iter()
                .map(|k| {
                    let id = key_id(&k);
                    (k, id)
                })
                .collect(),
            expected_seq: 1,
            expected_prev: genesis,
            last_entry: None,
            entries: 0,
            gap: None,
            region: None,
            torn: None,
            checkpoints: 0,
            unchecked_checkpoints: 0,
            last_checkpoint: None,
            notes: Vec::new(),
        }
    }

    fn name(&self, file: usize) -> String {
        self.files[file].display().to_string()
    }

    /// One line of file `file`; `complete` is false for bytes at EOF
    /// without a newline.
    fn line(
        &mut self,
        file: usize,
        line: u64,
        bytes: &[u8],
        complete: bool,
    ) -> Result<(), Finding> {
        let path = self.files[file].clone();
        if !complete {
            if let Some(r) = self.region.take() {
                return Err(not_a_torn_write(&self.files[r.file], r.line));
            }
            self.torn = Some((file, line, bytes.len() as u64));
            return Ok(());
        }
        let Some(p) = parse(bytes) else {
            match &mut self.region {
                Some(r) => {
                    r.multi = true;
                    r.len += bytes.len() as u64 + 1;
                    if let Some(d) = &mut r.digest {
                        d.update(bytes);
                        d.update(b"\n");
                    }
                }
                None => {
                    let mut kept = bytes.to_vec();
                    kept.push(b'\n');
                    let starts_log = file == 0 && line == 1;
                    self.region = Some(Region {
                        file,
                        line,
                        len: kept.len() as u64,
                        digest: starts_log.then(|| Sha256::new_with_prefix(&kept)),
                        bytes: kept,
                        multi: false,
                    });
                }
            }
            return Ok(());
        };
        if let Some(gap) = self.gap.take() {
            return Err(self.gap_finding(&gap, Some((line, p.seq))));
        }
        match self.region.take() {
            Some(region) if event_of(bytes).as_deref() == Some("adopted") => {
                self.check_adoption(region, file, line, bytes, &p)?
            }
            Some(region) => self.check_recovery(&region, file, line, bytes, &p)?,
            // An adoption with nothing before it: the adopted lines were removed.
            None if p.seq == 1
                && (contains(bytes, "adopted") || contains(bytes, "\\u"))
                && event_of(bytes).as_deref() == Some("adopted") =>
            {
                return Err(finding(
                    &path,
                    line,
                    Some(p.seq),
                    format!(
                        "line {line} (seq 1): an adopted entry with nothing before it: the lines \
                         it adopted were removed"
                    ),
                ));
            }
            None => {}
        }
        if !p.hash_matches() {
            return Err(finding(
                &path,
                line,
                Some(p.seq),
                format!(
                    "line {line} (seq {}): hash does not match its contents (altered)",
                    p.seq
                ),
            ));
        }
        if p.seq > self.expected_seq {
            self.gap = Some(Gap {
                file,
                line,
                seq: p.seq,
                expected: self.expected_seq,
                first_in_file: line == 1,
            });
            return Ok(());
        }
        if p.seq < self.expected_seq {
            return Err(finding(
                &path,
                line,
                Some(p.seq),
                format!(
                    "line {line}: seq {} follows seq {} (entry inserted, duplicated or reordered?)",
                    p.seq,
                    self.expected_seq - 1
                ),
            ));
        }
        if p.prev != self.expected_prev {
            return Err(self.prev_finding(file, line, p.seq));
        }
        // Cheap filter before parsing, blind to no spelling: JSON can write
        // `checkpoint` (or the key `event`) only literally or with a `\u` escape,
        // and the parsed `event` decides, as it does for jq.
        if contains(bytes, "checkpoint") || contains(bytes, "\\u") {
            if !self.keys.is_empty() {
                self.check_checkpoint(file, line, bytes, &p)?;
            } else if is_checkpoint(bytes) {
                self.unchecked_checkpoints += 1;
            }
        }
        self.expected_seq = p.seq + 1;
        self.expected_prev.copy_from_slice(p.hash);
        self.last_entry = Some((file, line));
        self.entries += 1;
        Ok(())
    }

    fn prev_finding(&self, file: usize, line: u64, seq: u64) -> Finding {
        let message = match self.last_entry {
            None => format!("line {line} (seq {seq}): prev is not the genesis value (entries before it removed?)"),
            Some((f, l)) => {
                let where_ = if f == file {
                    format!("line {l}")
                } else {
                    format!("line {l} of {}", self.name(f))
                };
                format!(
                    "line {line} (seq {seq}): prev does not match the hash of {where_} (seq {}): \
                     that entry was altered or replaced, or this one was inserted",
                    seq - 1
                )
            }
        };
        finding(&self.files[file], line, Some(seq), message)
    }

    fn gap_finding(&self, gap: &Gap, next: Option<(u64, u64)>) -> Finding {
        let path = &self.files[gap.file];
        if let Some((next_line, next_seq)) = next {
            if next_seq == gap.expected {
                return finding(
                    path,
                    gap.line,
                    Some(gap.seq),
                    format!(
                        "line {} (seq {}) and line {next_line} (seq {next_seq}) are out of order (reordered)",
                        gap.line, gap.seq
                    ),
                );
            }
        }
        let missing = if gap.expected + 1 == gap.seq {
            format!("seq {}", gap.expected)
        } else {
            format!("seq {}..{}", gap.expected, gap.seq - 1)
        };
        let message = match self.last_entry {
            None => format!(
                "line {}: the first entry has seq {}, not 1 ({missing} missing: earlier entries or rotated files removed?)",
                gap.line, gap.seq
            ),
            Some((f, _)) if gap.first_in_file && f != gap.file => format!(
                "line {}: seq {} follows seq {} at the end of {} ({missing} missing: a rotated file removed?)",
                gap.line,
                gap.seq,
                gap.expected - 1,
                self.name(f)
            ),
            Some(_) => format!(
                "line {}: seq {} follows seq {} (entry removed? {missing} missing)",
                gap.line,
                gap.seq,
                gap.expected - 1
            ),
        };
        finding(path, gap.line, Some(gap.seq), message)
    }

    /// Non-entry lines are accepted only when the next entry is a recovery
    /// entry naming exactly their bytes.
    fn check_recovery(
        &mut self,
        region: &Region,
        file: usize,
        line: u64,
        bytes: &[u8],
        p: &Parsed,
    ) -> Result<(), Finding> {
        let bad = || {
            finding(
                &self.files[region.file],
                region.line,
                None,
                format!(
                    "line {}: not a valid audit entry (altered, or a torn write that no recovery entry accounts for)",
                    region.line
                ),
            )
        };
        if region.file != file {
            return Err(bad());
        }
        let v: Map<String, Value> = serde_json::from_slice(bytes).map_err(|_| bad())?;
        let claimed_len = v.get("torn_bytes").and_then(Value::as_u64);
        let claimed_sha = v.get("torn_sha256").and_then(Value::as_str);
        let (Some("recovered"), Some(n), Some(sha)) = (
            v.get("event").and_then(Value::as_str),
            claimed_len,
            claimed_sha,
        ) else {
            return Err(bad());
        };
        // The writer adds one '\n' after a fragment that lacks it.
        if n != region.len && n + 1 != region.len {
            return Err(bad());
        }
        // A crash leaves part of one line: named bytes holding a newline are lines
        // someone else added, whatever entry vouches for them.
        if region.multi || n == region.len {
            return Err(finding(
                &self.files[region.file],
                region.line,
                None,
                format!(
                    "line {}: lines that are not entries, sealed by the recovery entry on line \
                     {line} (seq {}) as if a crash had torn them (a crash leaves at most a partial \
                     last line)",
                    region.line, p.seq
                ),
            ));
        }
        let torn = usize::try_from(n)
            .ok()
            .and_then(|n| region.bytes.get(..n))
            .ok_or_else(bad)?;
        if hex::encode(Sha256::digest(torn)) != sha {
            return Err(bad());
        }
        self.notes.push(format!(
            "{} line {}: {n} torn bytes left by a crash, recorded by the recovery entry on line {line} (seq {})",
            self.name(file),
            region.line,
            p.seq
        ));
        Ok(())
    }

    /// Lines upm did not write are accepted before an `adopted` entry only at the start
    /// of the oldest file, and only when the entry records exactly their length and
    /// SHA-256 (so any change to them is found).
    fn check_adoption(
        &mut self,
        region: Region,
        file: usize,
        line: u64,
        bytes: &[u8],
        p: &Parsed,
    ) -> Result<(), Finding> {
        let lines = if region.line + 1 == line {
            format!("line {}", region.line)
        } else {
            format!("lines {}-{}", region.line, line - 1)
        };
        let here = |message: String| finding(&self.files[region.file], region.line, None, message);
        let Some(digest) = region.digest.filter(|_| region.file == file && p.seq == 1) else {
            return Err(here(format!(
                "{lines}: not valid audit entries, before an adopted entry on line {line} (seq {}); \
                 upm adopts lines it did not write only at the start of a log, as its first entry",
                p.seq
            )));
        };
        let v: Map<String, Value> = serde_json::from_slice(bytes).unwrap_or_default();
        let claimed_len = v.get("foreign_bytes").and_then(Value::as_u64);
        let claimed_sha = v.get("foreign_sha256").and_then(Value::as_str);
        let sha = hex::encode(digest.finalize());
        if claimed_len != Some(region.len) || claimed_sha != Some(sha.as_str()) {
            return Err(here(format!(
                "{lines}: {} bytes with sha256 {sha}, but the adopted entry on line {line} (seq 1) \
                 records {} bytes with sha256 {}: the adopted lines were altered, added or removed",
                region.len,
                claimed_len.map_or("no".to_owned(), |n| n.to_string()),
                crate::error::clip(claimed_sha.unwrap_or("none").to_owned(), 100),
            )));
        }
        // Whoever can write the log chose it (the hash is checked after this).
        let by = crate::error::clip(
            v.get("adopted_by")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned(),
            100,
        );
        self.notes.push(format!(
            "{} {lines}: {} bytes upm did not write (sha256 {sha}), adopted by the entry on line \
             {line} (seq 1; allowed by {by}); the chain starts there and vouches for them as they \
             were adopted, not for what they say",
            self.name(file),
            region.len,
        ));
        Ok(())
    }

    fn check_checkpoint(
        &mut self,
        file: usize,
        line: u64,
        bytes: &[u8],
        p: &Parsed,
    ) -> Result<(), Finding> {
        let Ok(v) = serde_json::from_slice::<Map<String, Value>>(bytes) else {
            return Ok(());
        };
        if !event_is_checkpoint(&v) {
            return Ok(());
        }
        let path = self.files[file].clone();
        let fail = |why: String| {
            finding(
                &path,
                line,
                Some(p.seq),
                format!("line {line} (seq {}): checkpoint {why}", p.seq),
            )
        };
        let signed_seq = v.get("signed_seq").and_then(Value::as_u64);
        let signed_hash = v.get("signed_hash").and_then(Value::as_str);
        if signed_seq != Some(p.seq - 1) || signed_hash.map(str::as_bytes) != Some(p.prev) {
            return Err(fail("does not sign the entry just before it".into()));
        }
        let sig = v
            .get("sig")
            .and_then(Value::as_str)
            .and_then(|s| hex::decode(s).ok())
            .and_then(|b| Signature::from_slice(&b).ok());
        let Some(sig) = sig else {
            return Err(fail("has a missing or malformed signature".into()));
        };
        let Some(every) = v
            .get("sign_every")
            .and_then(Value::as_u64)
            .filter(|&n| n > 0)
        else {
            return Err(fail("has no valid sign_every".into()));
        };
        let hash = String::from_utf8_lossy(p.prev);
        let message = checkpoint_message(p.seq - 1, &hash, every);
        // Any of the keys given (one per signing key the log has had).
        if !self.keys.iter().any(|k| k.0.verify(&message, &sig).is_ok()) {
            let their = v.get("key_id").and_then(Value::as_str).unwrap_or("?");
            let their = crate::error::clip(their.to_string(), 100);
            let ours: Vec<&str> = self.keys.iter().map(|k| k.1.as_str()).collect();
            return Err(fail(format!(
                "signature does not verify with key {} (checkpoint names key {their}): forged, or signed by another key",
                ours.join(" or ")
            )));
        }
        self.checkpoints += 1;
        self.last_checkpoint = Some((file, line, p.seq, every));
        Ok(())
    }

    /// End of one file: non-entry lines must have been accounted for.
    fn end_file(&mut self, file: usize, is_last: bool) -> Result<(), Finding> {
        if let Some((f, line, _)) = self.torn {
            if !is_last {
                return Err(finding(
                    &self.files[f],
                    line,
                    None,
                    format!("line {line}: a rotated file ends with an incomplete line (altered)"),
                ));
            }
        }
        if let Some(r) = self.region.take() {
            if r.digest.is_some() && self.entries == 0 {
                return Err(finding(
                    &self.files[r.file],
                    r.line,
                    None,
                    "no audit entry at all: lines upm did not write (a log UPM wrote? upm adopts \
                     it on its first call when UPM_LOG_FILE names it)"
                        .into(),
                ));
            }
            if is_last {
                return Err(not_a_torn_write(&self.files[r.file], r.line));
            } else {
                return Err(finding(
                    &self.files[file],
                    r.line,
                    None,
                    format!("line {}: not a valid audit entry (altered)", r.line),
                ));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Finding> {
        if let Some(gap) = self.gap.take() {
            return Err(self.gap_finding(&gap, None));
        }
        if self.keys.is_empty() || self.entries == 0 {
            return Ok(());
        }
        let last = self.expected_seq - 1;
        match self.last_checkpoint {
            None => {
                let (file, line) = self.last_entry.unwrap_or((0, 1));
                Err(finding(
                    &self.files[file],
                    line,
                    Some(last),
                    "no signed checkpoint anywhere in the log (signing was off, or checkpoints were removed)".into(),
                ))
            }
            Some((file, line, seq, every)) if last - seq > 2 * every + 2 => Err(finding(
                &self.files[file],
                line,
                Some(seq),
                format!(
                    "line {line} (seq {seq}) is the last checkpoint, but {} entries follow it and one is \
                     written every {every}: checkpoints missing (log rewritten after seq {seq}?)",
                    last - seq
                ),
            )),
            Some((_, _, seq, _)) => {
                if last > seq {
                    self.notes.push(format!(
                        "seq {}..{last} come after the last checkpoint and are not yet signed",
                        seq + 1
                    ));
                }
                Ok(())
            }
        }
    }
}

fn event_is_checkpoint(v: &Map<String, Value>) -> bool {
    v.get("event").and_then(Value::as_str) == Some("checkpoint")
}

/// Whether an entry's `event` is `checkpoint`.
fn is_checkpoint(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Map<String, Value>>(bytes).is_ok_and(|v| event_is_checkpoint(&v))
}

/// Verifies the whole log set of `path`; with `key`, also every checkpoint.
pub fn verify(path: &Path, key: Option<&Path>) -> VerifyReport {
    let keys: Vec<PathBuf> = key.map(Path::to_path_buf).into_iter().collect();
    verify_with_keys(path, &keys)
}

/// Verifies the whole log set of `path`; with keys, also that every checkpoint is signed
/// by one of them (a log whose signing key was changed needs the old and the new).
pub fn verify_with_keys(path: &Path, keys: &[PathBuf]) -> VerifyReport {
    let mut report = VerifyReport {
        files: Vec::new(),
        entries: 0,
        last_seq: None,
        head: None,
        checkpoints_verified: 0,
        notes: Vec::new(),
        outcome: Outcome::Intact,
    };
    let keys = match keys
        .iter()
        .map(|k| load_verifying_key(k))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(k) => k,
        Err(e) => {
            report.outcome = Outcome::Unreadable(e.to_string());
            return report;
        }
    };
    let files = match log_set(path) {
        Ok(f) => f,
        Err(e) => {
            report.outcome =
                Outcome::Unreadable(format!("cannot list the files of {}: {e}", path.display()));
            return report;
        }
    };
    if path.exists() && !files.iter().any(|f| f == path) {
        report.notes.push(format!(
            "{} is the newest rotated file itself: a rotation was interrupted (the next rotation drops the extra name)",
            printable(&path.display().to_string())
        ));
    }
    report.files = files.clone();
    let mut c = Checker::new(files, keys);
    let walked = walk(&mut c);
    report.entries = c.entries;
    report.last_seq = (c.entries > 0).then(|| c.expected_seq - 1);
    report.head = (c.entries > 0).then(|| String::from_utf8_lossy(&c.expected_prev).into_owned());
    report.checkpoints_verified = c.checkpoints;
    report.outcome = match walked {
        Err(o) => o,
        Ok(()) => match c.torn {
            Some((f, line, bytes)) => Outcome::TornTail {
                file: c.files[f].clone(),
                line,
                bytes,
            },
            None => Outcome::Intact,
        },
    };
    report.notes.append(&mut c.notes);
    if c.unchecked_checkpoints > 0 && report.exit_code() == 0 {
        report.notes.push(format!(
            "{} checkpoint signature(s) not checked: no --key given (upm audit verify --key PUB \
             checks them)",
            c.unchecked_checkpoints
        ));
    }
    report
}

fn walk(c: &mut Checker) -> Result<(), Outcome> {
    let count = c.files.len();
    for i in 0..count {
        let path = c.files[i].clone();
        let unreadable =
            |e: std::io::Error| Outcome::Unreadable(format!("cannot read {}: {e}", path.display()));
        let f = open_regular(&path).map_err(unreadable)?;
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut buf = Vec::with_capacity(4096);
        let mut line = 0u64;
        loop {
            let kind = read_line(&mut r, &mut buf, MAX_ENTRY_BYTES).map_err(unreadable)?;
            line += 1;
            let complete = match kind {
                Line::Eof => break,
                Line::Complete => true,
                Line::Partial => false,
                Line::TooLong => {
                    return Err(Outcome::Broken(finding(
                        &path,
                        line,
                        None,
                        format!(
                            "line {line}: more than {MAX_ENTRY_BYTES} bytes without a newline, \
                             longer than any entry (not written by upm)"
                        ),
                    )))
                }
            };
            c.line(i, line, &buf, complete).map_err(Outcome::Broken)?;
        }
        c.end_file(i, i + 1 == count).map_err(Outcome::Broken)?;
    }
    c.finish().map_err(Outcome::Broken)
}

/// Writes `n` sealed entries without fsync, for tests and the benchmark
/// (`verify` speed on a large log).
pub fn write_synthetic_log(path: &Path, n: u64) -> Result<(), AuditError> {
    let io = |source| AuditError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut out = std::io::BufWriter::new(File::create(path).map_err(io)?);
    let mut prev = GENESIS.to_string();
    for seq in 1..=n {
        let mut m = Map::new();
        m.insert(
            "event".into(),
            if seq % 2 == 1 { "started" } else { "finished" }.into(),
        );
        m.insert(
            "request_id".into(),
            format!("0190f1a2-0000-7000-8000-{:012x}", seq / 2).into(),
        );
        m.insert("plugin".into(), "texttools".into());
        m.insert("method".into(), "upper".into());
        m.insert("code".into(), "ok".into());
        m.insert("exit_code".into(), 0.into());
        m.insert(
            "args_sha256".into(),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        );
        m.insert("ts".into(), "2026-11-22T04:40:00.000Z".into());
        let (line, hash) = seal(seq, &prev, &m)?;
        out.write_all(&line).map_err(io)?;
        prev = hash;
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests;
