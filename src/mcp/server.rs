//! The server loop: one reader, `--parallel` workers, one writer lock.
//!
//! The reader (upm's main thread) reads one bounded line at a time and answers what
//! costs nothing at once (`initialize`, `ping`, `tools/list`, protocol errors, and a
//! `tools/call` that cannot run: audited, then refused); each other `tools/call` is
//! registered under its JSON-RPC id, with its own [`Cancel`], and queued for the workers, which run it through the pipeline exactly as `upm run` would and
//! answer as it finishes. A `notifications/cancelled` fires the call's `Cancel`: a
//! running plugin is killed with its tree, a queued call is refused before it starts,
//! and either ends `cancelled` in the audit log with no answer.
//!
//! The end: EOF on stdin (the client closed the connection) fires every call's
//! `Cancel` (they end `cancelled`, answered if anyone still reads), SIGTERM/SIGINT/SIGHUP
//! stop every call through upm's own stop (see [`crate::spawn::stop`]); either way the
//! workers finish what they hold, each call with its `finished` entry, and upm exits
//! (0, or 15 for a signal). If stdout cannot be written, upm stops reading (the reader
//! watches a `Cancel` of its own), stops its calls, and exits 1.

use super::jsonrpc::{self, Incoming};
use super::tools::{Tool, Tools};
use crate::batch::{read_line, Line};
use crate::error::{Code, Failure};
use crate::pipeline::{Context, Input, Session};
use crate::request::{self, Request};
use crate::response::{Captured, Response};
use crate::spawn::stop::{self, Cancel, Watch, Why};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The revisions upm speaks, newest first: the answer to a client that asks for
/// another is the newest (the spec's lifecycle, "Version Negotiation").
pub const PROTOCOL_VERSIONS: [&str; 2] = ["2025-11-25", "2025-06-18"];

/// The key each call's audit entries record the MCP side of the call under.
const ORIGIN_KEY: &str = "mcp";

/// The longest client name or version kept for the audit entries.
const MAX_CLIENT_CHARS: usize = 128;

pub struct Server<'a> {
    session: &'a Session,
    tools: &'a Tools,
    out: Mutex<Box<dyn Write + Send + 'a>>,
    failed_output: AtomicBool,
    /// Fired once upm can no longer answer: the reader stops.
    reading: Arc<Cancel>,
    state: Mutex<State>,
    jobs: Mutex<Jobs<'a>>,
    ready: Condvar,
}

#[derive(Default)]
struct State {
    /// The negotiated revision, once `initialize` was answered.
    version: Option<&'static str>,
    /// The client's `clientInfo` name and version, for the audit entries.
    client: Value,
}

struct Jobs<'a> {
    queue: VecDeque<Job<'a>>,
    /// Every call not yet answered (queued or running), by id.
    in_flight: HashMap<String, Arc<Cancel>>,
    closing: bool,
}

/// An admitted `tools/call`, waiting for a worker.
struct Job<'a> {
    id: Value,
    tool: &'a Tool,
    args: Value,
    /// The `mcp` block of its audit entries.
    origin: Value,
    cancel: Arc<Cancel>,
}

/// Why a `tools/call` is not run, and how it is answered.
struct Refusal<'t> {
    answer: Answer<'t>,
    failure: Failure,
    /// The tool it names, if any: its plugin and method are audited.
    tool: Option<&'t Tool>,
}

enum Answer<'t> {
    /// A JSON-RPC error with this code (the request itself is wrong).
    Rpc(i64),
    /// A tool error (`isError`), for the model to read and correct.
    ToolError(&'t Tool),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'a> Server<'a> {
    pub fn new(
        session: &'a Session,
        tools: &'a Tools,
        out: Box<dyn Write + Send + 'a>,
        reading: Arc<Cancel>,
    ) -> Server<'a> {
        Server {
            session,
            tools,
            out: Mutex::new(out),
            failed_output: AtomicBool::new(false),
            reading,
            state: Mutex::new(State::default()),
            jobs: Mutex::new(Jobs {
                queue: VecDeque::new(),
                in_flight: HashMap::new(),
                closing: false,
            }),
            ready: Condvar::new(),
        }
    }

    /// Serves until EOF, a stop signal or a broken stdout; returns the exit code.
    pub fn serve(&self, mut input: impl BufRead, parallel: usize) -> i32 {
        std::thread::scope(|s| {
            for _ in 0..parallel.max(1) {
                s.spawn(|| self.work());
            }
            self.read(&mut input);
            let why = if stop::requested() {
                Why::Signal
            } else {
                Why::CallerGone
            };
            let mut jobs = lock(&self.jobs);
            jobs.closing = true;
            for c in jobs.in_flight.values() {
                c.fire(why);
            }
            drop(jobs);
            self.ready.notify_all();
        });
        if self.failed_output.load(Ordering::SeqCst) {
            1
        } else if stop::requested() {
            Code::Cancelled.exit_code()
        } else {
            0
        }
    }

    fn read(&self, input: &mut impl BufRead) {
        let cap = self.session.max_request_bytes();
        loop {
            if self.reading.fired().is_some() {
                return;
            }
            let line = match read_line(input, cap) {
                Ok(l) => l,
                Err(e) if stop::Stopped::is(&e) => return,
                Err(e) => {
                    tracing::error!("upm mcp: stdin failed: {e}");
                    return;
                }
            };
            match line {
                Line::Eof => return,
                Line::TooLong => {
                    self.send(&jsonrpc::error(
                        &Value::Null,
                        jsonrpc::INVALID_REQUEST,
                        &format!(
                            "Invalid Request: the message is larger than the {cap}-byte limit \
                             (the config's max_request_bytes) and was skipped unread"
                        ),
                        None,
                    ));
                    self.audit_unreadable(Input::TooLong, &Value::Null);
                }
                Line::Request(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {}
                Line::Request(bytes) => self.message(bytes),
            }
        }
    }

    /// A message that cannot be read may have been a call: audited as a refused one.
    fn audit_unreadable(&self, input: Input<std::io::Empty>, id: &Value) {
        let ctx = Context {
            stop: Watch::default(),
            origin: Some((ORIGIN_KEY, json!({ "jsonrpc_id": id }))),
            ..Default::default()
        };
        let _ = self.session.call_in(input, ctx);
    }

    fn message(&self, bytes: Vec<u8>) {
        let msg = match request::parse_json(&bytes, false) {
            Ok(m) => m,
            // Valid JSON all the same: answered under its id, when it has one.
            Err(e @ request::RequestError::WideInteger(_)) => {
                let id = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .filter(|id| id.is_string() || id.is_number())
                    .unwrap_or(Value::Null);
                let text = format!("Invalid params: {e}");
                self.send(&jsonrpc::error(&id, jsonrpc::INVALID_PARAMS, &text, None));
                self.audit_unreadable(Input::Line(bytes), &id);
                return;
            }
            Err(e) => {
                let text = format!("Parse error: {e}");
                self.send(&jsonrpc::error(
                    &Value::Null,
                    jsonrpc::PARSE_ERROR,
                    &text,
                    None,
                ));
                self.audit_unreadable(Input::Line(bytes), &Value::Null);
                return;
            }
        };
        match jsonrpc::classify(msg) {
            Incoming::Invalid { id, why } => self.send(&jsonrpc::error(
                &id,
                jsonrpc::INVALID_REQUEST,
                &format!("Invalid Request: {why}"),
                None,
            )),
            Incoming::Response => {}
            Incoming::Notification { method, params } => {
                if method == "notifications/cancelled" {
                    self.cancel(params);
                }
            }
            Incoming::Request { id, method, params } => self.request(id, &method, params),
        }
    }

    fn request(&self, id: Value, method: &str, params: Option<Value>) {
        let version = lock(&self.state).version;
        let answer = match (method, version) {
            ("initialize", None) => self.initialize(&id, params),
            ("initialize", Some(_)) => jsonrpc::error(
                &id,
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: the session is already initialized",
                None,
            ),
            ("ping", _) => jsonrpc::result(&id, json!({})),
            (_, None) => jsonrpc::error(
                &id,
                jsonrpc::INVALID_REQUEST,
                &format!(
                    "Invalid Request: the session is not initialized: the first request must be \
                     initialize, not {}",
                    request::noted(method)
                ),
                None,
            ),
            ("tools/list", Some(_)) => jsonrpc::result(&id, self.tools.to_mcp()),
            ("tools/call", Some(_)) => return self.enqueue(id, params),
            (other, Some(_)) => jsonrpc::error(
                &id,
                jsonrpc::METHOD_NOT_FOUND,
                &format!(
                    "Method not found: {} (upm offers tools only)",
                    request::noted(other)
                ),
                None,
            ),
        };
        self.send(&answer);
    }

    fn initialize(&self, id: &Value, params: Option<Value>) -> Value {
        let params = params.unwrap_or(Value::Null);
        let Some(asked) = params.get("protocolVersion").and_then(Value::as_str) else {
            return jsonrpc::error(
                id,
                jsonrpc::INVALID_PARAMS,
                "Invalid params: initialize needs a protocolVersion (a string)",
                None,
            );
        };
        let version = PROTOCOL_VERSIONS
            .iter()
            .copied()
            .find(|v| *v == asked)
            .unwrap_or(PROTOCOL_VERSIONS[0]);
        let info = params.get("clientInfo");
        let field = |k: &str| {
            info.and_then(|i| i.get(k))
                .and_then(Value::as_str)
                .map(|s| crate::error::clip(s.to_owned(), MAX_CLIENT_CHARS))
        };
        let client = json!({ "name": field("name"), "version": field("version") });
        let mut state = lock(&self.state);
        state.version = Some(version);
        state.client = client;
        drop(state);
        let mut server_info = json!({
            "name": "upm",
            "title": "upm",
            "version": env!("CARGO_PKG_VERSION"),
        });
        if version == "2025-11-25" {
            server_info["description"] =
                json!("Whitelisted plugin methods as tools; every call sandboxed and audited");
        }
        jsonrpc::result(
            id,
            json!({
                "protocolVersion": version,
                "capabilities": { "tools": { "listChanged": false } },
                "serverInfo": server_info,
                "instructions": "Each tool runs one whitelisted plugin method in upm's sandbox \
                                 (no network unless the operator allowed it, limited time and \
                                 memory); its arguments are checked against the method's JSON \
                                 Schema, and every call is recorded in an audit log. A failed \
                                 call comes back with isError and upm's error code and reason.",
            }),
        )
    }

    /// A `tools/call`: refused at once, on this thread, when it cannot run (a duplicate
    /// id, malformed params, an unknown tool, arguments that do not fit the tool's
    /// wrapper), so that its answer does not wait behind the calls the workers run;
    /// else queued for them.
    fn enqueue(&self, id: Value, params: Option<Value>) {
        let name = params
            .as_ref()
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str);
        let origin = json!({
            "jsonrpc_id": id,
            "tool": name.map(request::noted),
            "client": lock(&self.state).client,
        });
        let key = jsonrpc::id_key(&id);
        // Only this thread adds ids: one that is not in flight now cannot become so.
        let duplicate = lock(&self.jobs).in_flight.contains_key(&key);
        let arguments = params.as_ref().and_then(|p| p.get("arguments"));
        let admitted = self.admit(&id, name, arguments, duplicate);
        let (tool, args) = match admitted {
            Ok(ok) => ok,
            Err(refusal) => {
                let ctx = Context {
                    origin: Some((ORIGIN_KEY, origin)),
                    ..Default::default()
                };
                return self.send(&self.refuse(&id, refusal, ctx));
            }
        };
        let cancel = match Cancel::new() {
            Ok(c) => c,
            Err(e) => {
                let text = format!("Internal error: cannot make the call cancellable: {e}");
                return self.send(&jsonrpc::error(&id, -32603, &text, None));
            }
        };
        let mut jobs = lock(&self.jobs);
        jobs.in_flight.insert(key, cancel.clone());
        jobs.queue.push_back(Job {
            id,
            tool,
            args,
            origin,
            cancel,
        });
        drop(jobs);
        self.ready.notify_one();
    }

    /// The tool a `tools/call` names and the call's args, or why it cannot run, in the
    /// order the checks were always made.
    fn admit(
        &self,
        id: &Value,
        name: Option<&str>,
        arguments: Option<&Value>,
        duplicate: bool,
    ) -> Result<(&'a Tool, Value), Refusal<'a>> {
        let tools: &'a Tools = self.tools;
        let tool = name.and_then(|n| tools.get(n));
        let refusal = |answer, failure| Refusal {
            answer,
            failure,
            tool,
        };
        if duplicate {
            let f = Failure::new(
                Code::BadRequest,
                format!("Invalid Request: the id {id} is already that of a call in flight"),
            );
            return Err(refusal(Answer::Rpc(jsonrpc::INVALID_REQUEST), f));
        }
        let Some(name) = name.filter(|_| arguments.is_none_or(Value::is_object)) else {
            let f = Failure::new(
                Code::BadRequest,
                "Invalid params: tools/call needs params {\"name\": string, \"arguments\": \
                 object (optional)}",
            );
            return Err(refusal(Answer::Rpc(jsonrpc::INVALID_PARAMS), f));
        };
        let Some(tool) = tool else {
            let f = match self.tools.left_out.get(name) {
                Some(why) => Failure::new(
                    Code::ConfigError,
                    format!(
                        "Unknown tool: {}: upm left it out at start, since every call of it \
                         would fail: {why}",
                        request::noted(name)
                    ),
                ),
                None => Failure::new(
                    Code::NotWhitelisted,
                    format!(
                        "Unknown tool: {} (tools/list names every tool)",
                        request::noted(name)
                    ),
                ),
            };
            return Err(refusal(Answer::Rpc(jsonrpc::INVALID_PARAMS), f));
        };
        match tool.args(arguments.cloned()) {
            Ok(args) => Ok((tool, args)),
            Err(why) => Err(refusal(
                Answer::ToolError(tool),
                Failure::new(Code::InvalidArgs, why),
            )),
        }
    }

    /// A refused `tools/call`, audited (durably, as every refusal) before it is answered.
    fn refuse(&self, id: &Value, r: Refusal<'_>, ctx: Context) -> Value {
        let (plugin, method) = r.tool.map_or((None, None), |t| {
            (Some(t.plugin.as_str()), Some(t.method.as_str()))
        });
        let text = r.failure.message.clone();
        let resp = self.session.refuse_in(r.failure, ctx, plugin, method);
        match r.answer {
            Answer::ToolError(tool) => jsonrpc::result(id, tool_result(tool, resp)),
            Answer::Rpc(code) => jsonrpc::error(id, code, &text, None),
        }
    }

    /// `notifications/cancelled`: an unknown, finished or malformed id is ignored, as
    /// the spec says.
    fn cancel(&self, params: Option<Value>) {
        let Some(id) = params
            .as_ref()
            .and_then(|p| p.get("requestId"))
            .filter(|id| id.is_string() || id.is_number())
        else {
            return;
        };
        let reason = params
            .as_ref()
            .and_then(|p| p.get("reason"))
            .and_then(Value::as_str)
            .map(|r| crate::error::clip(r.to_owned(), 256));
        if let Some(c) = lock(&self.jobs).in_flight.get(&jsonrpc::id_key(id)) {
            tracing::info!(
                "upm mcp: the client cancelled call {id} ({})",
                reason.as_deref().unwrap_or("no reason given")
            );
            c.fire(Why::Cancelled);
        }
    }

    fn work(&self) {
        loop {
            let job = {
                let mut jobs = lock(&self.jobs);
                loop {
                    if let Some(job) = jobs.queue.pop_front() {
                        break job;
                    }
                    if jobs.closing {
                        return;
                    }
                    jobs = self.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
                }
            };
            let answer = self.call(&job);
            lock(&self.jobs).in_flight.remove(&jsonrpc::id_key(&job.id));
            if let Some(a) = answer {
                self.send(&a);
            }
        }
    }

    /// One admitted `tools/call`, run through the pipeline; `None` when the client
    /// cancelled it (no answer, as the spec says).
    fn call(&self, job: &Job) -> Option<Value> {
        let ctx = Context {
            stop: Watch::with(job.cancel.clone()),
            origin: Some((ORIGIN_KEY, job.origin.clone())),
            ..Default::default()
        };
        let tool = job.tool;
        let req = Request {
            plugin: tool.plugin.clone(),
            method: tool.method.clone(),
            args: job.args.clone(),
            request_id: None,
            introspect: None,
        };
        let resp = self
            .session
            .call_in(Input::<std::io::Empty>::Parsed(req), ctx);
        if resp.data.code == Some(Code::Cancelled.as_str())
            && job.cancel.fired() == Some(Why::Cancelled)
        {
            return None;
        }
        Some(jsonrpc::result(&job.id, tool_result(tool, resp)))
    }

    /// Writes one message as one line (one write, serialized before the lock is taken).
    /// A failure stops the server: nobody reads.
    fn send(&self, msg: &Value) {
        let mut line = serde_json::to_vec(msg).unwrap_or_else(|_| {
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Internal error"}}"#
                .to_vec()
        });
        line.push(b'\n');
        let mut out = lock(&self.out);
        let written = out.write_all(&line).and_then(|()| out.flush());
        drop(out);
        if let Err(e) = written {
            if !self.failed_output.swap(true, Ordering::SeqCst) {
                tracing::error!("upm mcp: stdout failed ({e}): stopping");
            }
            self.reading.fire(Why::OutputGone);
            for c in lock(&self.jobs).in_flight.values() {
                c.fire(Why::OutputGone);
            }
        }
    }
}

/// The most of a failed call's stderr its tool error's text holds: its end, where a
/// plugin's own word on why it failed usually is.
const STDERR_TAIL_BYTES: usize = 2048;

/// The most of each captured stream's text `_meta["upm/call"]` holds: metadata for a
/// client's logs, not a second copy of up to the whole output cap on one JSON-RPC line.
const META_STREAM_BYTES: usize = 16 * 1024;

/// A call's response as a `CallToolResult`: the result as `structuredContent` and as
/// JSON text, or `isError` with upm's code and sentence (and its details: schema
/// violations, a traceback; and the end of the plugin's stderr) for the model to read.
/// `_meta["upm/call"]` holds the rest of upm's answer: request_id, call_id, usage, the
/// sandbox report, the captured streams (each bounded).
fn tool_result(tool: &Tool, mut resp: Response) -> Value {
    let result = resp.data.result.take();
    let stderr_tail = resp.data.stderr.as_ref().and_then(stderr_tail);
    for c in [&mut resp.data.stdout, &mut resp.data.stderr]
        .into_iter()
        .flatten()
    {
        bound(c, META_STREAM_BYTES);
    }
    let meta = json!({ "upm/call": serde_json::to_value(&resp.data).unwrap_or(Value::Null) });
    if resp.success {
        let structured = tool.structured(result.unwrap_or(Value::Null));
        return json!({
            "content": [{ "type": "text", "text": structured.to_string() }],
            "structuredContent": structured,
            "isError": false,
            "_meta": meta,
        });
    }
    let mut text = format!(
        "{}: {}",
        resp.data.code.unwrap_or("internal_error"),
        resp.data.error.as_deref().unwrap_or("the call failed")
    );
    if let Some(d) = &resp.data.details {
        text.push_str("\ndetails: ");
        text.push_str(&d.to_string());
    }
    if let Some(tail) = stderr_tail {
        text.push('\n');
        text.push_str(&tail);
    }
    json!({
        "content": [{ "type": "text", "text": text }],
        "isError": true,
        "_meta": meta,
    })
}

/// The end of a failed call's stderr, at most [`STDERR_TAIL_BYTES`] of it (cut at a
/// character), headed by what it is; `None` when the plugin wrote nothing but blanks.
fn stderr_tail(c: &Captured) -> Option<String> {
    let text = c.text.trim_end();
    if text.trim_start().is_empty() {
        return None;
    }
    let mut from = text.len().saturating_sub(STDERR_TAIL_BYTES);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    let tail = &text[from..];
    let n = tail.len();
    let head = match (from > 0, c.truncated) {
        (false, false) => "stderr:".to_owned(),
        (true, false) => format!("stderr (truncated: its last {n} of {} bytes):", c.bytes),
        // What upm kept is the stream's beginning: the rest was not kept.
        (cut, true) => format!(
            "stderr (truncated: upm kept the first {} of its {} bytes{}):",
            c.text.len(),
            c.bytes,
            if cut {
                format!(", of which the last {n}")
            } else {
                String::new()
            }
        ),
    };
    let mark = if from > 0 { "…" } else { "" };
    Some(format!("{head}\n{mark}{tail}"))
}

/// Cuts a captured stream's text to its first `max` bytes (at a character), marked
/// `truncated` as upm's own capture marks it; `bytes` still counts all it wrote.
fn bound(c: &mut Captured, max: usize) {
    if c.text.len() <= max {
        return;
    }
    let mut end = max;
    while !c.text.is_char_boundary(end) {
        end -= 1;
    }
    c.text.truncate(end);
    c.truncated = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(text: &str, bytes: u64) -> Captured {
        Captured {
            text: text.to_owned(),
            bytes,
            truncated: bytes > text.len() as u64,
            invalid_utf8_at: None,
        }
    }

    #[test]
    fn a_stderr_tail_is_bounded_marked_and_cut_at_a_character() {
        let c = captured("something went wrong\n", 21);
        assert_eq!(stderr_tail(&c).unwrap(), "stderr:\nsomething went wrong");
        assert_eq!(stderr_tail(&captured(" \n\t\n", 4)), None);
        // 'é' is two bytes: the cut moves forward to the next character.
        let long = format!("{}{}", "é".repeat(2000), "the end");
        let t = stderr_tail(&captured(&long, long.len() as u64)).unwrap();
        let (head, tail) = t.split_once('\n').unwrap();
        assert!(tail.starts_with('…') && tail.ends_with("the end"), "{tail}");
        assert!(tail.len() <= STDERR_TAIL_BYTES + '…'.len_utf8());
        assert_eq!(
            head,
            format!(
                "stderr (truncated: its last {} of {} bytes):",
                tail.len() - 3,
                long.len()
            )
        );
        let t = stderr_tail(&captured("oops", 9000)).unwrap();
        assert_eq!(
            t,
            "stderr (truncated: upm kept the first 4 of its 9000 bytes):\noops"
        );
    }

    #[test]
    fn a_meta_stream_is_cut_at_a_character_and_marked() {
        let mut c = captured(&"é".repeat(10), 20);
        bound(&mut c, 5);
        assert_eq!((c.text.as_str(), c.truncated, c.bytes), ("éé", true, 20));
        let mut c = captured("short", 5);
        bound(&mut c, 5);
        assert_eq!((c.text.as_str(), c.truncated), ("short", false));
    }
}
