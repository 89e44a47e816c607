//! Group commit: calls running concurrently in one upm process share fsyncs.
//!
//! A caller queues its entry, then either becomes the leader — it takes every queued
//! entry and appends them in one transaction, one `write` and one `fdatasync` — or
//! waits for a leader to do that. Either way a caller returns only once its own entry
//! is durable (or has failed), so [`AuditLog::append`]'s guarantee is unchanged; what
//! changes is that N overlapping calls need far fewer than N fsyncs. A lone call (every
//! one-shot `upm run`) is its own leader at once.

use super::{AuditError, AuditLog, AuditSettings};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The session's audit log, opened on first use, appended with group commit.
pub struct GroupCommit {
    path: PathBuf,
    settings: AuditSettings,
    state: Mutex<State>,
    turn: Condvar,
    /// Held only by the leader while it writes.
    log: Mutex<Option<AuditLog>>,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    queue: Vec<(u64, Map<String, Value>)>,
    leader: bool,
    outcomes: HashMap<u64, Result<String, Arc<AuditError>>>,
}

impl GroupCommit {
    pub fn new(path: PathBuf, settings: AuditSettings) -> GroupCommit {
        GroupCommit {
            path,
            settings,
            state: Mutex::new(State::default()),
            turn: Condvar::new(),
            log: Mutex::new(None),
        }
    }

    /// Opens the log if it is not open yet: a call checks this before preparing
    /// anything, so that nothing runs when the log cannot be written.
    pub fn ensure_open(&self) -> Result<(), Arc<AuditError>> {
        self.with_log(|_| Ok(())).map_err(Arc::new)
    }

    /// Appends `entry` durably (in a group with whatever else is queued) and returns
    /// its hash.
    pub fn append(&self, entry: Map<String, Value>) -> Result<String, Arc<AuditError>> {
        let mut st = lock(&self.state);
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.queue.push((ticket, entry));
        loop {
            if let Some(outcome) = st.outcomes.remove(&ticket) {
                return outcome;
            }
            if st.leader {
                st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.leader = true;
            let batch = std::mem::take(&mut st.queue);
            drop(st);
            let (tickets, entries): (Vec<u64>, Vec<_>) = batch.into_iter().unzip();
            // A panic here (a bug) must not leave `leader` set: every other call would
            // wait forever. Its batch fails like any write, and the log is reopened
            // (re-reading its tail) by the next append.
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(test)]
                if entries.iter().any(|e| e.contains_key(tests::PANIC)) {
                    panic!("a test's panicking entry");
                }
                self.with_log(|log| {
                    let all = |hashes: Vec<String>| -> Vec<Result<String, Arc<AuditError>>> {
                        hashes.into_iter().map(Ok).collect()
                    };
                    if entries.len() == 1 {
                        return log.append_all(entries).map(all);
                    }
                    match log.append_all(entries.clone()) {
                        // One entry the writer refuses (before writing anything) must not
                        // fail the others queued with it: each is tried alone.
                        Err(AuditError::Entry { .. }) => Ok(entries
                            .into_iter()
                            .map(|e| log.append(e).map_err(Arc::new))
                            .collect()),
                        other => other.map(all),
                    }
                })
            }))
            .unwrap_or_else(|_| {
                *lock(&self.log) = None;
                Err(AuditError::WriterPanicked)
            });
            st = lock(&self.state);
            match written {
                Ok(results) => st.outcomes.extend(tickets.into_iter().zip(results)),
                Err(e) => {
                    let e = Arc::new(e);
                    st.outcomes
                        .extend(tickets.into_iter().map(|t| (t, Err(e.clone()))));
                }
            }
            st.leader = false;
            self.turn.notify_all();
        }
    }

    /// What the log adopted, if an append of this session did (see
    /// [`AuditLog::take_adopted`]); taken once.
    pub fn take_adopted(&self) -> Option<Value> {
        lock(&self.log).as_mut().and_then(AuditLog::take_adopted)
    }

    fn with_log<T>(
        &self,
        f: impl FnOnce(&mut AuditLog) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let mut guard = lock(&self.log);
        if guard.is_none() {
            *guard = Some(AuditLog::open(&self.path, &self.settings)?);
        }
        match guard.as_mut() {
            Some(log) => f(log),
            None => unreachable!("the log was opened just above"),
        }
    }
}

/// A poisoned lock only means another call panicked; the data is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An entry with this key makes the leader panic before writing.
    pub(super) const PANIC: &str = "test_panic_in_the_leader";

    #[test]
    fn a_leader_that_panics_fails_its_batch_and_nobody_waits_forever() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let g = Arc::new(GroupCommit::new(path.clone(), AuditSettings::default()));
        g.append(entry("before")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..8 {
            let (g, tx) = (g.clone(), tx.clone());
            std::thread::spawn(move || {
                let mut e = entry(&format!("t{t}"));
                if t == 0 {
                    e.insert(PANIC.into(), json!(true));
                }
                tx.send((t, g.append(e).is_ok())).unwrap();
            });
        }
        let mut outcomes: Vec<(i32, bool)> = (0..8)
            .map(|_| {
                rx.recv_timeout(std::time::Duration::from_secs(10))
                    .expect("a call waited forever on a leader that panicked")
            })
            .collect();
        outcomes.sort();
        assert_eq!(
            outcomes[0],
            (0, false),
            "the panicking entry is not durable"
        );
        // The log is reopened: later entries extend an intact chain.
        g.append(entry("after")).unwrap();
        let report = crate::audit::verify(&path, None);
        assert_eq!(report.outcome, crate::audit::Outcome::Intact, "{report}");
        let written = outcomes.iter().filter(|o| o.1).count() as u64;
        assert_eq!(report.entries, 2 + written);
        assert!(!std::fs::read_to_string(&path).unwrap().contains(PANIC));
    }

    /// An entry the writer refuses, committed in one group with another: only it fails.
    #[test]
    fn a_refused_entry_does_not_fail_the_others_in_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let g = Arc::new(GroupCommit::new(path.clone(), AuditSettings::default()));
        g.ensure_open().unwrap();
        // Hold the log: the first caller becomes the leader and waits on it, while the
        // next two queue up behind it and are then committed together.
        let held = lock(&g.log);
        let spawn = |e: Map<String, Value>| {
            let g = g.clone();
            std::thread::spawn(move || g.append(e))
        };
        let first = spawn(entry("first"));
        while !lock(&g.state).leader {
            std::thread::yield_now();
        }
        let mut huge = entry("huge");
        let over = crate::audit::writer::MAX_ENTRY_BYTES + 1;
        huge.insert("pad".into(), json!("x".repeat(over)));
        let huge = spawn(huge);
        let fine = spawn(entry("fine"));
        while lock(&g.state).queue.len() < 2 {
            std::thread::yield_now();
        }
        drop(held);
        assert!(first.join().unwrap().is_ok());
        let refused = huge.join().unwrap();
        assert!(
            matches!(
                refused.as_ref().map_err(|e| &**e),
                Err(AuditError::Entry { .. })
            ),
            "{refused:?}"
        );
        assert!(
            fine.join().unwrap().is_ok(),
            "its group-mate's refusal is not its own"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["request_id"].to_string())
            .collect();
        assert_eq!(ids, ["\"first\"", "\"fine\""]);
        let report = crate::audit::verify(&path, None);
        assert_eq!(report.outcome, crate::audit::Outcome::Intact, "{report}");
    }

    fn entry(id: &str) -> Map<String, Value> {
        let v = json!({"event": "started", "request_id": id});
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn concurrent_appends_each_land_once_with_their_own_hash_on_an_intact_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let g = Arc::new(GroupCommit::new(path.clone(), AuditSettings::default()));
        g.ensure_open().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|i| g.append(entry(&format!("t{t}-{i}"))).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut hashes: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 400);
        // Every caller got the hash of a line that is in the file, each exactly once.
        let mut in_file: Vec<String> = lines
            .iter()
            .map(|l| l["hash"].as_str().unwrap().to_owned())
            .collect();
        hashes.sort();
        in_file.sort();
        assert_eq!(hashes, in_file);
        // And the chain verifies.
        let report = crate::audit::verify(&path, None);
        assert_eq!(report.outcome, crate::audit::Outcome::Intact, "{report}");
        assert_eq!(report.entries, 400);
    }
}
