//! `upm audit show`: filter entries of the whole log set.

use std::collections::HashSet;
use std::io::{BufReader, Write};
use std::path::Path;

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};

use super::files::{log_set, open_regular, read_line, Line};
use super::format::{parse, printable};
use super::writer::MAX_ENTRY_BYTES;
use super::AuditError;

/// How `upm audit show` prints what matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    /// The log's own lines, unchanged (pipe into jq).
    Jsonl,
    /// Aligned columns for people.
    Table,
}

/// All given conditions must hold. `since` is inclusive, `until` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub request_id: Option<String>,
    /// upm's own per-call id: pairs a call's entries where request_ids repeat.
    pub call_id: Option<String>,
    pub plugin: Option<String>,
    pub method: Option<String>,
    /// The entry's `code` word ("ok", "timeout", ...).
    pub outcome: Option<String>,
    pub since: Option<DateTime<FixedOffset>>,
    pub until: Option<DateTime<FixedOffset>>,
    /// Only the `started` entry (the first, one per call_id) of each call with no
    /// `finished` entry anywhere in the log set ([`unfinished_calls`]).
    pub unfinished: bool,
}

impl Filter {
    fn field_is(entry: &Map<String, Value>, key: &str, want: &Option<String>) -> bool {
        want.as_deref()
            .is_none_or(|w| entry.get(key).and_then(Value::as_str) == Some(w))
    }

    pub fn matches(&self, entry: &Map<String, Value>) -> bool {
        if !(Self::field_is(entry, "request_id", &self.request_id)
            && Self::field_is(entry, "call_id", &self.call_id)
            && Self::field_is(entry, "plugin", &self.plugin)
            && Self::field_is(entry, "method", &self.method)
            && Self::field_is(entry, "code", &self.outcome))
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(ts) = entry
            .get("ts")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        else {
            return false;
        };
        self.since.is_none_or(|s| ts >= s) && self.until.is_none_or(|u| ts < u)
    }
}

/// `call_id` in full (a UUIDv7: its first digits are a timestamp, shared by a batch's
/// calls, so no prefix of it would tell them apart), pasteable into `--call-id`.
const COLUMNS: [(&str, usize); 9] = [
    ("ts", 24),
    ("seq", 8),
    ("event", 10),
    ("request_id", 36),
    ("call_id", 36),
    ("plugin", 14),
    ("method", 14),
    ("code", 20),
    ("exit_code", 9),
];

fn cell(entry: &Map<String, Value>, key: &str) -> String {
    match entry.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => printable(s),
        Some(v) => v.to_string(),
    }
}

fn table_row(out: &mut dyn Write, cells: &[String]) -> std::io::Result<()> {
    let mut row = String::new();
    for (i, (c, (_, w))) in cells.iter().zip(COLUMNS).enumerate() {
        if i > 0 {
            row.push_str("  ");
        }
        row.push_str(&format!("{c:<w$}"));
    }
    writeln!(out, "{}", row.trim_end())
}

/// What [`show`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shown {
    pub matched: u64,
    /// Lines skipped because they are not entries: the lines UPM wrote before an
    /// `adopted` entry, a torn write, or worse (`verify` tells which).
    pub not_entries: u64,
}

/// Calls `each` with every entry of the log set of `path` (its bytes, without the
/// `\n`), oldest first; returns how many lines were not entries (their shape, not their
/// JSON, decides: the log UPM wrote is JSON too).
fn walk(
    path: &Path,
    mut each: impl FnMut(&[u8]) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let read_err = |p: &Path, source| AuditError::Read {
        path: p.to_path_buf(),
        source,
    };
    let files = log_set(path).map_err(|e| read_err(path, e))?;
    let mut not_entries = 0;
    let mut line = Vec::new();
    for file in &files {
        let mut r = BufReader::new(open_regular(file).map_err(|e| read_err(file, e))?);
        loop {
            let kind =
                read_line(&mut r, &mut line, MAX_ENTRY_BYTES).map_err(|e| read_err(file, e))?;
            match kind {
                Line::Eof => break,
                Line::Complete | Line::Partial => {}
                // Longer than any entry: skipped, a bounded piece at a time.
                Line::TooLong => {
                    while read_line(&mut r, &mut line, MAX_ENTRY_BYTES)
                        .map_err(|e| read_err(file, e))?
                        == Line::TooLong
                    {}
                    not_entries += 1;
                    continue;
                }
            }
            if parse(&line).is_none() {
                not_entries += 1;
                continue;
            }
            each(&line)?;
        }
    }
    Ok(not_entries)
}

/// The two fields that pair a call's entries.
#[derive(serde::Deserialize)]
struct CallEvent {
    event: Option<String>,
    call_id: Option<String>,
}

/// The call_ids of the calls that have a `started` entry and no `finished` entry
/// anywhere in the log set of `path`: upm was killed (or its `finished` entry could not
/// be written, exit 11) or they are still running. A call cancelled once started has its
/// `finished` (code `cancelled`); one cancelled before has a `refused` entry and no
/// `started`. A `started` entry without a call_id cannot be paired and is not counted.
pub fn unfinished_calls(path: &Path) -> Result<HashSet<String>, AuditError> {
    let mut started = HashSet::new();
    // `finished` before its `started` (a rewritten log): still that call's end.
    let mut finished_first = HashSet::new();
    walk(path, |line| {
        let Ok(CallEvent {
            event: Some(event),
            call_id: Some(id),
        }) = serde_json::from_slice::<CallEvent>(line)
        else {
            return Ok(());
        };
        match event.as_str() {
            "started" if !finished_first.contains(&id) => {
                started.insert(id);
            }
            "finished" if !started.remove(&id) => {
                finished_first.insert(id);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(started)
}

/// Prints the matching entries of the log set of `path` to `out`, oldest
/// first; lines that are not entries are skipped and counted.
pub fn show(
    path: &Path,
    filter: &Filter,
    format: ShowFormat,
    out: &mut dyn Write,
) -> Result<Shown, AuditError> {
    let mut unfinished = if filter.unfinished {
        Some(unfinished_calls(path)?)
    } else {
        None
    };
    if format == ShowFormat::Table {
        let head: Vec<String> = COLUMNS.iter().map(|(n, _)| n.to_uppercase()).collect();
        table_row(out, &head).map_err(AuditError::Output)?;
    }
    let (mut matched, mut not_objects) = (0, 0);
    let not_entries = walk(path, |line| {
        let Ok(entry) = serde_json::from_slice::<Map<String, Value>>(line) else {
            not_objects += 1;
            return Ok(());
        };
        if let Some(calls) = unfinished.as_mut() {
            // Taken out when shown: one `started` entry per call, its first.
            let pending = entry.get("event").and_then(Value::as_str) == Some("started")
                && entry
                    .get("call_id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| calls.remove(id));
            if !pending {
                return Ok(());
            }
        }
        if !filter.matches(&entry) {
            return Ok(());
        }
        matched += 1;
        let res = match format {
            ShowFormat::Jsonl => out.write_all(line).and_then(|()| out.write_all(b"\n")),
            ShowFormat::Table => {
                let cells: Vec<String> = COLUMNS.iter().map(|(k, _)| cell(&entry, k)).collect();
                table_row(out, &cells)
            }
        };
        res.map_err(AuditError::Output)
    })?;
    Ok(Shown {
        matched,
        not_entries: not_entries + not_objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, AuditSettings};

    fn sample() -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.log");
        let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
        for (rid, plugin, code, ts) in [
            ("a", "texttools", "ok", "2026-01-01T10:00:00.000Z"),
            ("b", "texttools", "timeout", "2026-01-02T10:00:00.000Z"),
            ("c", "other", "ok", "2026-01-03T10:00:00.000Z"),
        ] {
            let v = serde_json::json!({"request_id": rid, "call_id": format!("call-{rid}"),
                "event": "finished", "plugin": plugin,
                "method": "upper", "code": code, "exit_code": 0, "ts": ts});
            log.append(v.as_object().cloned().unwrap()).unwrap();
        }
        (d, p)
    }

    fn run(p: &Path, f: &Filter, format: ShowFormat) -> (u64, String) {
        let mut out = Vec::new();
        let n = show(p, f, format, &mut out).unwrap().matched;
        (n, String::from_utf8(out).unwrap())
    }

    #[test]
    fn filters_combine_and_jsonl_is_the_raw_line() {
        let (_d, p) = sample();
        let f = Filter {
            plugin: Some("texttools".into()),
            outcome: Some("ok".into()),
            ..Filter::default()
        };
        let (n, out) = run(&p, &f, ShowFormat::Jsonl);
        assert_eq!(n, 1);
        let raw = std::fs::read_to_string(&p).unwrap();
        assert_eq!(out, format!("{}\n", raw.lines().next().unwrap()));
        let f = Filter {
            request_id: Some("c".into()),
            ..Filter::default()
        };
        assert_eq!(run(&p, &f, ShowFormat::Jsonl).0, 1);
        let f = Filter {
            call_id: Some("call-b".into()),
            ..Filter::default()
        };
        let (n, out) = run(&p, &f, ShowFormat::Jsonl);
        assert_eq!(n, 1);
        assert!(out.contains("\"request_id\":\"b\""), "{out}");
        assert_eq!(run(&p, &Filter::default(), ShowFormat::Jsonl).0, 3);
    }

    #[test]
    fn time_window_is_since_inclusive_until_exclusive() {
        let (_d, p) = sample();
        let t = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap());
        let f = Filter {
            since: t("2026-01-02T10:00:00Z"),
            until: t("2026-01-03T10:00:00Z"),
            ..Filter::default()
        };
        let (n, out) = run(&p, &f, ShowFormat::Jsonl);
        assert_eq!(n, 1);
        assert!(out.contains("\"request_id\":\"b\""), "{out}");
    }

    #[test]
    fn table_has_a_header_and_one_row_per_match() {
        let (_d, p) = sample();
        let (n, out) = run(&p, &Filter::default(), ShowFormat::Table);
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows.len() as u64, n + 1);
        assert!(
            rows[0].starts_with("TS") && rows[0].contains("REQUEST_ID"),
            "{}",
            rows[0]
        );
        assert!(rows[2].contains("timeout") && rows[2].contains("2026-01-02T10:00:00.000Z"));
    }

    #[test]
    fn a_callers_strings_cannot_forge_a_row_or_hide_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q.log");
        let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
        let forged =
            "Nope\n2026-11-22T18:00:00.000Z  7  finished  legit  True  run  ok  0\u{1b}[8m";
        let v = serde_json::json!({"request_id": "x", "event": "refused",
            "plugin": forged, "method": "m\u{202e}dohtem\u{85}", "code": "not_whitelisted"});
        log.append(v.as_object().cloned().unwrap()).unwrap();
        let (n, out) = run(&p, &Filter::default(), ShowFormat::Table);
        assert_eq!(n, 1);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(
            out.contains("Nope\\u{a}2026") && out.contains("\\u{1b}[8m"),
            "{out}"
        );
        assert!(out.contains("m\\u{202e}dohtem\\u{85}"), "{out}");
    }

    #[test]
    fn unfinished_is_started_without_finished_one_entry_per_call() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("u.log");
        let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
        for (event, call) in [
            ("started", Some("done")),
            ("finished", Some("done")),
            ("started", Some("killed")),
            ("started", Some("killed")),
            ("finished", Some("late")),
            ("started", Some("late")),
            ("started", None),
            ("refused", Some("refused")),
        ] {
            let mut v = serde_json::json!({"request_id": "r", "event": event});
            if let Some(c) = call {
                v["call_id"] = c.into();
            }
            log.append(v.as_object().cloned().unwrap()).unwrap();
        }
        let calls = unfinished_calls(&p).unwrap();
        assert_eq!(calls, HashSet::from(["killed".to_owned()]));
        let f = Filter {
            unfinished: true,
            ..Filter::default()
        };
        let (n, out) = run(&p, &f, ShowFormat::Jsonl);
        assert_eq!(n, 1, "{out}");
        assert!(out.starts_with("{\"seq\":3,"), "{out}");
    }
}
