//! `upm run --jsonl`: one request per line in, one result per line out.
//!
//! The session (config, compiled schemas and BPF, audit log) is loaded once;
//! every call still gets its own fresh sandbox and its own audit entries.
//! With `--parallel N`, up to N calls run at a time and results are written
//! as calls finish, each on its own line and tagged with its `request_id`.
//! A malformed line gets its own error result and the batch goes on. A line
//! longer than the size cap is refused without being kept in memory.

use crate::error::Code;
use crate::pipeline::{Input, Session, Staged};
use crate::response::Response;
use crate::spawn::stop;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;

/// How many calls a batch prepares at most beyond those it runs (`--parallel`).
const LOOKAHEAD: usize = 4;

/// One line of input, bounded (also `upm mcp`'s messages).
pub(crate) enum Line {
    Request(Vec<u8>),
    TooLong,
    Eof,
}

/// Reads up to the next newline, keeping at most `cap` bytes.
pub(crate) fn read_line(input: &mut impl BufRead, cap: u64) -> std::io::Result<Line> {
    read_line_to_end(input, cap).map(|(line, _)| line)
}

/// [`read_line`], and whether the input's end was read (a last line without a newline,
/// or none): a terminal gives its end once, as one read of 0 bytes.
fn read_line_to_end(input: &mut impl BufRead, cap: u64) -> std::io::Result<(Line, bool)> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut saw_any = false;
    let mut at_end = false;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            at_end = true;
            break;
        }
        saw_any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if (line.len() + chunk.len()) as u64 > cap {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        input.consume(used);
        if done.is_some() {
            break;
        }
    }
    let line = match (saw_any, too_long) {
        (false, _) => Line::Eof,
        (true, true) => Line::TooLong,
        (true, false) => Line::Request(line),
    };
    Ok((line, at_end))
}

/// Where the reader stands: shared by the workers, behind one lock.
struct Reader<R> {
    input: R,
    /// Lines read so far (blank ones included), so results can name theirs.
    lines: u64,
    /// Set once stdin failed: nothing more is read.
    failed: bool,
    /// Set once a read gave stdin's end: nothing more is read. (A terminal's ^D gives
    /// one read of 0 bytes and then waits again: the other workers must not read on.)
    ended: bool,
}

/// Hands a read error to the pipeline, which refuses it like a one-shot call's.
struct Failed(Option<std::io::Error>);

impl std::io::Read for Failed {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| std::io::Error::other("stdin failed")))
    }
}

/// Runs every line of `input` as a call; returns the exit code: 0 once every line has
/// its result, 3 when stdin failed (that failure has a `bad_request` result of its
/// own), 15 when upm was asked to stop (lines not yet read have no result; calls
/// running then end `cancelled`), 1 when stdout could not be written or its reader left
/// before stdin's end (a reader gone once every line is read and answered is no
/// failure). Then no more lines are read, and the calls running or waiting for a slot
/// end `cancelled`: their results could not be delivered. `output_gone` is fired then:
/// `input`'s reads and the calls watch it (without one, should it not be made, the
/// calls already read still run, audited, their results lost). `output_fd`, `out`'s
/// descriptor, is watched meanwhile, so that a reader gone while no result is due
/// stops the calls too.
pub fn run(
    session: &Session,
    input: impl BufRead + Send,
    out: impl Write + Send,
    parallel: usize,
    output_gone: Option<std::sync::Arc<stop::Cancel>>,
    output_fd: Option<RawFd>,
) -> i32 {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    crate::sandbox::shared_net::enable();
    let cap = session.max_request_bytes();
    let reader = Mutex::new(Reader {
        input,
        lines: 0,
        failed: false,
        ended: false,
    });
    let out = Mutex::new(out);
    let failed_output = AtomicBool::new(false);
    // Seen gone by the watch below; every line read by then (stdin's EOF) and answered,
    // that is no failure.
    let reader_gone = AtomicBool::new(false);
    let all_read = AtomicBool::new(false);
    let failed_input = AtomicBool::new(false);
    let write = |mut response: Response, n: u64| {
        response.line = Some(n);
        let mut w = out.lock().unwrap_or_else(|e| e.into_inner());
        if response.write_line(&mut *w).is_err() {
            failed_output.store(true, Relaxed);
            if let Some(c) = &output_gone {
                c.fire(stop::Why::OutputGone);
            }
        }
    };
    let finished = |staged: Staged| match staged {
        Staged::Done(response) => response,
        Staged::Finishing(f) => session.complete(f),
    };
    // `--parallel N` (N ≥ 2) runs N plugins at a time, but up to N more workers (at most
    // LOOKAHEAD) prepare calls: a call waits for one of the N slots with its init cloned
    // and its `started` entry durable, so that the fsync overlaps other calls' plugins
    // instead of leaving a CPU idle. Each waiting call holds an init (and, in a user
    // namespace of its own, its plugin's process, parked before its exec) and ~10 descriptors,
    // hence the cap. (`--parallel 1` keeps one worker: its calls run in line order.)
    let (workers, slots) = match parallel.max(1) {
        1 => (1, None),
        n => (
            n + n.min(LOOKAHEAD),
            Some(std::sync::Arc::new(crate::pipeline::Slots::new(n))),
        ),
    };
    // Each worker's calls end on a thread of its own, in the order it read them: the
    // `finished` entry's fsync and the result's line, while the worker reads and starts
    // its next call (whose `started` entry then shares that fsync).
    let worker = |finishing: std::sync::mpsc::SyncSender<(Staged, u64)>| loop {
        if stop::requested() || failed_output.load(Relaxed) || reader_gone.load(Relaxed) {
            return;
        }
        let (line, n) = {
            let mut r = reader.lock().unwrap_or_else(|e| e.into_inner());
            if r.failed
                || r.ended
                || stop::requested()
                || failed_output.load(Relaxed)
                || reader_gone.load(Relaxed)
            {
                return;
            }
            let line = match read_line_to_end(&mut r.input, cap) {
                Ok((line, at_end)) => {
                    if at_end {
                        // Every line is read (this one, if any, was the last).
                        r.ended = true;
                        all_read.store(true, Relaxed);
                    }
                    Ok(line)
                }
                Err(e) => {
                    r.failed = true;
                    Err(e)
                }
            };
            r.lines += 1;
            (line, r.lines)
        };
        let staged = |input| {
            let ctx = crate::pipeline::Context {
                slots: slots.clone(),
                stop: output_gone
                    .as_ref()
                    .map_or_else(stop::Watch::default, |c| stop::Watch::with(c.clone())),
                ..Default::default()
            };
            session.call_staged(input, ctx)
        };
        let staged = match line {
            Ok(Line::Eof) => return,
            Ok(Line::Request(bytes)) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Line::Request(bytes)) => staged(Input::<Failed>::Line(bytes)),
            Ok(Line::TooLong) => staged(Input::<Failed>::TooLong),
            // Asked to stop while waiting for a line: no call, so no result.
            Err(e) if stop::Stopped::is(&e) => return,
            Err(e) => {
                failed_input.store(true, Relaxed);
                staged(Input::Stdin(Failed(Some(e))))
            }
        };
        if let Err(std::sync::mpsc::SendError((staged, n))) = finishing.send((staged, n)) {
            // The finisher is gone (it cannot be, short of a panic): finish here.
            write(finished(staged), n);
        }
    };
    let finisher = |calls: std::sync::mpsc::Receiver<(Staged, u64)>| {
        for (staged, n) in calls {
            write(finished(staged), n);
        }
    };
    // Whoever reads the results may go while no result is due: stdout is watched, so
    // that the calls stop then, not at the next result's write.
    let watching = match (&output_gone, output_fd) {
        (Some(gone), Some(fd)) => stop::wake_pipe().ok().map(|(r, w)| (gone, fd, r, w)),
        _ => None,
    };
    std::thread::scope(|s| {
        let (watcher, done) = match watching {
            Some((gone, fd, r, w)) => {
                let gone_flag = &reader_gone;
                let watcher = s.spawn(move || {
                    if output_failed(fd, r.as_raw_fd()) {
                        gone_flag.store(true, Relaxed);
                        gone.fire(stop::Why::OutputGone);
                    }
                });
                (Some(watcher), Some(w))
            }
            None => (None, None),
        };
        let mut running = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel(0);
            running.push(s.spawn(move || finisher(rx)));
            running.push(s.spawn(move || worker(tx)));
        }
        // (A thread's panic is carried on as before, once the watcher is woken: the
        // scope would otherwise wait for it.)
        let mut panicked = None;
        for t in running {
            if let Err(p) = t.join() {
                panicked.get_or_insert(p);
            }
        }
        // Wakes the watcher: the batch is over.
        drop(done);
        if let Some(w) = watcher {
            let _ = w.join();
        }
        if let Some(p) = panicked {
            std::panic::resume_unwind(p);
        }
    });
    exit_code(Ended {
        output_failed: failed_output.load(Relaxed),
        reader_gone: reader_gone.load(Relaxed),
        all_read: all_read.load(Relaxed),
        stopped: stop::requested(),
        input_failed: failed_input.load(Relaxed),
    })
}

/// How a batch ended, as far as its exit code goes.
#[derive(Debug, Clone, Copy, Default)]
struct Ended {
    /// A result line could not be written.
    output_failed: bool,
    /// The reader of the results was seen gone (stdout's watch).
    reader_gone: bool,
    /// stdin's end was read: every line had been read.
    all_read: bool,
    /// upm was asked to stop.
    stopped: bool,
    /// stdin failed (that failure has a result of its own).
    input_failed: bool,
}

/// The rule [`run`] documents: a reader gone once every line was read fails the batch
/// only if a result could not be written to it.
fn exit_code(e: Ended) -> i32 {
    if e.output_failed || (e.reader_gone && !e.all_read) {
        1
    } else if e.stopped {
        Code::Cancelled.exit_code()
    } else if e.input_failed {
        Code::BadRequest.exit_code()
    } else {
        0
    }
}

/// Waits until `fd` (upm's stdout) fails, or `done` turns readable (its write end
/// closed); true when stdout failed. A pipe's write end reports POLLERR once its
/// reader is gone, a socket or a terminal POLLHUP; a file never does (a write that
/// fails still tells).
fn output_failed(fd: RawFd, done: RawFd) -> bool {
    loop {
        let mut fds = [
            libc::pollfd {
                fd,
                events: 0,
                revents: 0,
            },
            libc::pollfd {
                fd: done,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds on our stack.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents & libc::POLLNVAL != 0 {
            return false;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_skipped_whole() {
        let data = b"{\"a\":1}\n0123456789abcdef\nxy\n";
        let mut r = std::io::BufReader::with_capacity(4, &data[..]);
        assert!(matches!(read_line(&mut r, 8).unwrap(), Line::Request(l) if l == b"{\"a\":1}"));
        assert!(matches!(read_line(&mut r, 8).unwrap(), Line::TooLong));
        assert!(matches!(read_line(&mut r, 8).unwrap(), Line::Request(l) if l == b"xy"));
        assert!(matches!(read_line(&mut r, 8).unwrap(), Line::Eof));
    }

    #[test]
    fn a_reader_gone_fails_the_batch_only_before_stdins_end() {
        let gone = Ended {
            reader_gone: true,
            ..Ended::default()
        };
        assert_eq!(exit_code(gone), 1, "gone while lines may still come");
        let done = Ended {
            all_read: true,
            ..gone
        };
        assert_eq!(
            exit_code(done),
            0,
            "gone once every line was read and answered"
        );
        let lost = Ended {
            output_failed: true,
            ..done
        };
        assert_eq!(exit_code(lost), 1, "a result that could not be written");
        assert_eq!(exit_code(Ended::default()), 0);
        let stopped = Ended {
            stopped: true,
            all_read: true,
            ..Ended::default()
        };
        assert_eq!(exit_code(stopped), Code::Cancelled.exit_code());
        let bad = Ended {
            input_failed: true,
            ..Ended::default()
        };
        assert_eq!(exit_code(bad), Code::BadRequest.exit_code());
    }

    #[test]
    fn last_line_without_newline() {
        let mut r = &b"abc"[..];
        assert!(matches!(read_line(&mut r, 8).unwrap(), Line::Request(l) if l == b"abc"));
        assert!(matches!(read_line(&mut r, 8).unwrap(), Line::Eof));
    }

    #[test]
    fn the_end_is_told_with_the_line_it_ends() {
        let mut r = &b"a\nbc"[..];
        let (line, at_end) = read_line_to_end(&mut r, 8).unwrap();
        assert!(matches!(line, Line::Request(l) if l == b"a") && !at_end);
        let (line, at_end) = read_line_to_end(&mut r, 8).unwrap();
        assert!(matches!(line, Line::Request(l) if l == b"bc") && at_end);
        let (line, at_end) = read_line_to_end(&mut r, 8).unwrap();
        assert!(matches!(line, Line::Eof) && at_end);
    }
}
