//! Running a prepared container: the engine's client in its own process group,
//! captured like a native plugin, killed and removed by name past the clock or the
//! output cap, and its exit told apart from the engine's own failures.

use super::{ContainerError, Prepared};
use crate::sandbox::policy::EngineKind;
use crate::spawn::{self, Exit, Io, Outcome, Pipes, Stream};
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs the container and captures it like a native plugin. `Err` means the
/// container never started (the engine refused, or the command is not in the image).
pub fn run(p: &Prepared, stop: &spawn::stop::Watch) -> Result<Outcome, ContainerError> {
    let started = Instant::now();
    let mut child = p
        .engine
        .command(&p.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ContainerError::Spawn {
            path: p.engine.path.clone(),
            source,
        })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        kill_client(&mut child);
        return Err(ContainerError::Spawn {
            path: p.engine.path.clone(),
            source: std::io::Error::other("the engine's pipes are missing"),
        });
    };
    let pipes = Pipes {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
    };
    let io = Io {
        stdin: &p.stdin,
        timeout: p.timeout,
        output_cap: p.output_cap,
        stop,
    };
    let pgid = child.id();
    let collected = spawn::capture(io, started, pipes, &mut || kill_group(pgid));
    let mut stopped_by = collected.stopped_by;
    // The client may close its pipes and linger: it gets what is left of the clock.
    let status = match wait_until(&mut child, started + p.timeout) {
        Some(s) => s,
        None => {
            stopped_by = stopped_by.or(Some(spawn::Stop::Timeout));
            kill_client(&mut child)
        }
    };
    if stopped_by.is_some() {
        remove(p);
    }
    let outcome = Outcome {
        exit: None,
        start_failure: None,
        stopped_by,
        stdout: collected.stdout,
        stderr: collected.stderr,
        result: Stream {
            closed: true,
            ..Stream::default()
        },
        wall: started.elapsed(),
        usage: None,
    };
    if stopped_by.is_some() {
        return Ok(outcome);
    }
    let container_started = match p.engine.kind {
        EngineKind::Podman => p.pidfile().exists(),
        EngineKind::Docker => !matches!(status.code(), Some(125..=127)),
    };
    classify(p.engine.kind, status, container_started, outcome)
}

/// The engine's exit status as the plugin's, or why the container never ran.
pub(super) fn classify(
    kind: EngineKind,
    status: ExitStatus,
    container_started: bool,
    mut outcome: Outcome,
) -> Result<Outcome, ContainerError> {
    let shown = status.code().map_or_else(
        || format!("signal {}", status.signal().unwrap_or(0)),
        |c| c.to_string(),
    );
    if !container_started && !status.success() {
        let message = String::from_utf8_lossy(&outcome.stderr.data)
            .trim()
            .to_owned();
        return Err(match status.code() {
            Some(126 | 127) => ContainerError::Command {
                status: shown,
                message,
            },
            _ => ContainerError::Engine {
                engine: kind.as_str(),
                status: shown,
                message,
            },
        });
    }
    // Engines report a container killed by signal n as 128+n.
    outcome.exit = Some(match status.code() {
        Some(c) if (129..=128 + 64).contains(&c) => Exit::Signal(c - 128),
        Some(c) => Exit::Code(c),
        None => Exit::Signal(status.signal().unwrap_or(0)),
    });
    Ok(outcome)
}

/// The usage a container call can honestly report: the engine does not hand back
/// the container's CPU time or memory, so only the wall clock.
pub fn usage(o: &Outcome) -> Value {
    json!({
        "wall_ms": crate::response::round_ms(o.wall.as_secs_f64() * 1000.0),
        "cpu": "not measured by the container backend",
    })
}

pub(super) fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => return None,
        }
    }
}

pub(super) fn kill_group(pgid: u32) {
    if let Ok(pid) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

pub(super) fn kill_client(child: &mut Child) -> ExitStatus {
    kill_group(child.id());
    let _ = child.kill();
    child
        .wait()
        .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL))
}

/// Kills and removes the container by name: killing the client alone leaves it running.
pub(super) fn remove(p: &Prepared) {
    let mut args = p.engine.global_args();
    // -v: an anonymous volume goes with the container (podman makes none with
    // --image-volume=ignore; docker refuses such images; a second guard either way).
    args.extend(["rm".into(), "-f".into(), "-v".into()]);
    if p.engine.kind == EngineKind::Podman {
        args.extend(["-t".into(), "0".into()]);
    }
    args.push(p.name.clone());
    let r = p
        .engine
        .command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match r {
        Ok(o) if o.status.success() => {}
        Ok(o) => tracing::warn!(
            container = %p.name,
            stderr = %String::from_utf8_lossy(&o.stderr).trim(),
            "could not remove the container"
        ),
        Err(e) => {
            tracing::warn!(container = %p.name, error = %e, "could not run the engine to remove the container")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stderr: &str) -> Outcome {
        Outcome {
            exit: None,
            start_failure: None,
            stopped_by: None,
            stdout: Stream::default(),
            stderr: Stream {
                data: stderr.as_bytes().to_vec(),
                total: stderr.len() as u64,
                closed: true,
            },
            result: Stream::default(),
            wall: Duration::ZERO,
            usage: None,
        }
    }

    fn code(c: i32) -> ExitStatus {
        ExitStatus::from_raw(c << 8)
    }

    #[test]
    fn engine_failure_before_start_is_not_a_plugin_exit() {
        let e = classify(
            EngineKind::Podman,
            code(125),
            false,
            outcome("Error: image not known"),
        )
        .unwrap_err();
        assert!(matches!(e, ContainerError::Engine { .. }));
        assert!(e.to_string().contains("image not known"), "{e}");
        let e = classify(EngineKind::Podman, code(127), false, outcome("not found")).unwrap_err();
        assert!(matches!(e, ContainerError::Command { .. }));
    }

    #[test]
    fn started_container_exits_are_the_plugins() {
        let o = classify(EngineKind::Podman, code(125), true, outcome("")).unwrap();
        assert_eq!(o.exit, Some(Exit::Code(125)));
        let o = classify(EngineKind::Podman, code(137), true, outcome("")).unwrap();
        assert_eq!(o.exit, Some(Exit::Signal(libc::SIGKILL)));
        let o = classify(EngineKind::Docker, code(0), true, outcome("")).unwrap();
        assert_eq!(o.exit, Some(Exit::Code(0)));
    }
}
