//! The helper's side (`upm-egress`, `src/bin/upm-egress.rs`): the proxy of one call, in
//! a process of its own. upm starts it; the protocol is in `spawn::egress`.

use super::proxy::{Handover, Proxy};
use super::record::{Message, Record};
use super::Settings;
use std::io::{BufRead, Read, Write};
use std::sync::Mutex;

/// The largest settings line upm sends (an allowlist of thousands of entries fits).
const MAX_SETTINGS: u64 = 4 << 20;

/// Runs the call's proxy until upm closes stdin; the process's exit code. `channel`
/// gives the channel upm passed (descriptor 3), and the listening socket through it.
pub fn main(channel: impl FnOnce() -> Result<Handover<'static>, String>) -> i32 {
    match run(channel) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("upm-egress: {e}");
            2
        }
    }
}

fn run(channel: impl FnOnce() -> Result<Handover<'static>, String>) -> Result<(), String> {
    // upm starts it through a descriptor (/proc/self/fd/N), which would name it "N".
    let _ = nix::sys::prctl::set_name(c"upm-egress");
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    (&mut input)
        .take(MAX_SETTINGS)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the settings from upm: {e}"))?;
    let settings: Settings = serde_json::from_slice(&line)
        .map_err(|e| format!("not settings from upm (this program is run by upm only): {e}"))?;
    let handover = channel()?;
    let out = Mutex::new(std::io::stdout());
    let say = |m: &Message| -> Result<(), String> {
        let mut line = serde_json::to_vec(m).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&line)
            .and_then(|()| out.flush())
            .map_err(|e| format!("upm went away: {e}"))
    };
    std::thread::scope(|scope| {
        let sink = |r: &Record| say(&Message::Record(r.clone()));
        let proxy = Proxy::start(scope, handover, &settings, sink);
        // upm closes stdin when the call ends (or when it dies).
        let mut rest = [0u8; 512];
        while matches!(input.read(&mut rest), Ok(n) if n > 0) {}
        let summary = proxy.finish();
        say(&Message::Summary(summary))
    })
}
