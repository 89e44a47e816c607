//! The call's egress proxy (issue 22) runs in a process of its own, `upm-egress`, beside
//! upm's executable; this is upm's side of it (the helper's own is
//! [`crate::egress::process`]).
//!
//! Why a process: the proxy parses what the plugin sends (HTTP heads, SOCKS requests),
//! which is untrusted input, and it needs an async runtime and a resolver (about a
//! megabyte of code). In a helper of its own, started only for a call with an
//! allowlist, that parser runs as a uid of its own (when upm is root) with no_new_privs,
//! not in upm's process with upm's privileges; and upm's own executable stays as small
//! as it was, so a call without an allowlist pays nothing for it (measured: linked into
//! upm, the proxy's code cost every call ~15 more page faults, 0.3-0.4 ms).
//!
//! The protocol (both ends in this crate):
//! - descriptor 3: upm's end of the channel over which the call's init hands over the
//!   listening socket (the helper receives it itself);
//! - stdin: the call's [`Settings`], one JSON line; then nothing, until upm closes it at
//!   the end of the call: the helper then ends every connection and exits;
//! - stdout: one line per connection as it ends, `{"record": {...}}`, which upm audits
//!   at once, and a last line `{"summary": {...}}`.
//!
//! If upm cannot audit a record, it kills the helper: every connection ends at once,
//! and nothing goes on unaudited. If upm dies, the helper's parent-death signal kills it.

use crate::egress::record::{Message, Record, Summary};
use crate::egress::Settings;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

pub use crate::egress::HELPER;
/// The longest line the helper may write (a record is well under 4 KiB).
const MAX_LINE: u64 = 1 << 20;
/// How long the helper may take to end its connections and sum up once told to.
const FINISH: Duration = Duration::from_secs(5);

/// Where upm looks for the helper: beside its own executable, never on a PATH or where
/// the environment says (a caller must not be able to swap the proxy).
pub fn path() -> Result<PathBuf, String> {
    let me = std::env::current_exe()
        .map_err(|e| format!("cannot tell where upm's own executable is: {e}"))?;
    Ok(me.with_file_name(HELPER))
}

/// Opens the helper and checks it as a plugin's file is checked (a regular file, owned
/// by root or upm's user, writable by neither group nor others, nor its directory).
pub fn open() -> Result<(std::fs::File, PathBuf), String> {
    let path = path()?;
    let file = crate::integrity::open_checked(&path).map_err(|e| {
        format!(
            "the egress proxy {} cannot be used ({e}); it is built and installed beside upm",
            path.display()
        )
    })?;
    Ok((file, path))
}

/// The call's running proxy.
pub struct Helper<'scope> {
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    done: mpsc::Receiver<()>,
    reader: Option<ScopedJoinHandle<'scope, Reading>>,
    path: PathBuf,
}

#[derive(Default)]
struct Reading {
    /// Counted here too, in case the helper ends without its summary.
    tally: Option<Summary>,
    summary: Option<Summary>,
    audit_error: Option<String>,
    protocol_error: Option<String>,
}

impl<'scope> Helper<'scope> {
    /// Starts the helper for one call: `channel` is upm's end of the init's channel,
    /// `own_uid` gives it a uid (and gid) of its own (root upm), and `sink` audits each
    /// record (an error kills the helper).
    pub fn start<'env, F>(
        scope: &'scope Scope<'scope, 'env>,
        channel: OwnedFd,
        settings: &Settings,
        own_uid: Option<u32>,
        sink: F,
    ) -> Result<Helper<'scope>, String>
    where
        F: FnMut(&Record) -> Result<(), String> + Send + 'scope,
    {
        let (exe, path) = open()?;
        let ids = own_uid.map(|u| (u, u));
        let mut child = super::helper::start(&super::helper::Helper {
            exe: &exe,
            fd3: &channel,
            ids,
            name: HELPER,
            args: &[],
        })
        .map_err(|e| format!("cannot start the egress proxy {}: {e}", path.display()))?;
        drop(channel);
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the egress proxy has no pipes".into());
        };
        let mut line = serde_json::to_vec(settings).map_err(|e| e.to_string())?;
        line.push(b'\n');
        if let Err(e) = stdin.write_all(&line) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cannot hand the egress proxy its settings: {e}"));
        }
        let child = Arc::new(Mutex::new(child));
        let (done_tx, done) = mpsc::channel();
        let killer = child.clone();
        let reader = std::thread::Builder::new()
            .name("upm-egress-audit".into())
            .spawn_scoped(scope, move || {
                let r = read(stdout, sink, &killer);
                let _ = done_tx.send(());
                r
            });
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                kill(&child);
                return Err(format!("cannot start the egress proxy's audit thread: {e}"));
            }
        };
        Ok(Helper {
            child,
            stdin: Some(stdin),
            done,
            reader: Some(reader),
            path,
        })
    }

    /// Ends the call's connections (closing the helper's stdin), waits (bounded) until
    /// each is audited, and sums up.
    pub fn finish(mut self) -> Summary {
        drop(self.stdin.take());
        if self.done.recv_timeout(FINISH).is_err() {
            kill(&self.child);
        }
        let reading = self
            .reader
            .take()
            .map(ScopedJoinHandle::join)
            .and_then(Result::ok)
            .unwrap_or_default();
        let status = lock(&self.child).wait();
        let mut summary = match reading.summary {
            Some(s) => s,
            None => {
                let mut s = reading
                    .tally
                    .unwrap_or_else(|| Summary::new(crate::egress::proxy_address()));
                s.error = Some(format!(
                    "the egress proxy {} ended without its summary ({})",
                    self.path.display(),
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                ));
                s
            }
        };
        if let Some(e) = reading.audit_error {
            summary.error = Some(format!(
                "the audit log could not record a connection ({e}): the proxy was stopped, \
                 ending every connection"
            ));
        } else if let Some(e) = reading.protocol_error {
            summary.error.get_or_insert(e);
        }
        summary
    }
}

impl Drop for Helper<'_> {
    fn drop(&mut self) {
        // Only when `finish` was not reached (a panic): no helper outlives its call.
        if self.reader.is_some() {
            kill(&self.child);
            let _ = lock(&self.child).wait();
        }
    }
}

fn lock(child: &Mutex<Child>) -> std::sync::MutexGuard<'_, Child> {
    child.lock().unwrap_or_else(|e| e.into_inner())
}

fn kill(child: &Mutex<Child>) {
    let _ = lock(child).kill();
}

/// Reads the helper's lines until it closes its stdout: audits each record, keeps the
/// summary. A line that is not the protocol, or a record the audit log refuses, kills it.
fn read<F>(stdout: ChildStdout, mut sink: F, child: &Mutex<Child>) -> Reading
where
    F: FnMut(&Record) -> Result<(), String>,
{
    let mut reading = Reading {
        tally: Some(Summary::new(crate::egress::proxy_address())),
        ..Reading::default()
    };
    let mut lines = BufReader::new(stdout);
    loop {
        let mut line = Vec::new();
        match (&mut lines).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match serde_json::from_slice::<Message>(&line) {
            Ok(Message::Record(record)) => {
                if let Some(t) = reading.tally.as_mut() {
                    t.add(&record);
                }
                if reading.audit_error.is_none() {
                    if let Err(e) = sink(&record) {
                        reading.audit_error = Some(e);
                        kill(child);
                    }
                }
            }
            Ok(Message::Summary(s)) => reading.summary = Some(s),
            Err(e) => {
                reading.protocol_error = Some(format!(
                    "the egress proxy wrote something that is not its protocol ({e}); it was stopped"
                ));
                kill(child);
                break;
            }
        }
    }
    reading
}
