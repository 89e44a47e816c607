//! The engine's command line and the report of what is in force, built from a
//! [`Spec`]: pure data, so that the argv can be tested without an engine.

use super::engine::{Engine, EngineInfo, Init, NEEDED_CONTROLLERS};
use super::TMP;
use crate::sandbox::policy::{EngineKind, Policy};
use crate::sandbox::{limits, seccomp};
use serde_json::{json, Value};
use std::path::Path;

/// RLIMIT_NPROC counts every process of the uid on the host (rootful engines give the
/// container no user namespace), so it is not the call's process limit: the pids cgroup is.
/// It is set as high as the runtime can set it: upm's own hard limit, at most pid_max.
pub(super) fn nproc_ceiling() -> u64 {
    let mut own = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 on upm itself, writing into a valid rlimit64 on our stack.
    let rc = unsafe { libc::prlimit64(0, libc::RLIMIT_NPROC, std::ptr::null(), &mut own) };
    let own = if rc == 0 { own.rlim_max } else { u64::MAX };
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(32_768);
    own.min(pid_max)
}

/// podman's --timeout is a signed 32-bit number of seconds.
pub(super) const MAX_ENGINE_TIMEOUT_S: u64 = i32::MAX as u64;

pub(super) fn engine_timeout_s(timeout_ms: u64) -> u64 {
    timeout_ms
        .div_ceil(1000)
        .saturating_add(2)
        .min(MAX_ENGINE_TIMEOUT_S)
}

/// What `run` is built from: pure data, so the argv can be tested.
pub(super) struct Spec<'a> {
    pub(super) engine: &'a Engine,
    pub(super) policy: &'a Policy,
    pub(super) image: &'a str,
    pub(super) argv: &'a [String],
    pub(super) name: &'a str,
    pub(super) seccomp: &'a Path,
    pub(super) pidfile: &'a Path,
    pub(super) env: Vec<String>,
    /// The limits a native call gets whatever the policy says.
    pub(super) fixed: limits::Fixed,
    pub(super) init: Init,
    /// RLIMIT_NPROC: not the call's process limit (see [`nproc_ceiling`]).
    pub(super) nproc: u64,
    /// The limits the engine will not enforce (`allow_degraded: ["limits"]`), if any.
    pub(super) degraded: Option<Vec<&'static str>>,
}

/// `upm-<request id, made a valid name>-<12 random hex>`.
pub(super) fn container_name(request_id: &str) -> String {
    let safe: String = request_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("upm-{safe}-{}", &random[20..])
}

pub(super) fn tmpfs_option(limits: &crate::sandbox::policy::Limits) -> String {
    format!("{TMP}:rw,noexec,nosuid,nodev,size={}", limits.disk_bytes)
}

pub(super) fn run_args(s: &Spec<'_>) -> Vec<String> {
    let l = &s.policy.limits;
    let u = &s.policy.user;
    let mut a: Vec<String> = s.engine.global_args();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|x| (*x).to_owned()));
    push(&[
        "run",
        "--rm",
        "-i",
        "--pull=never",
        "--log-driver=none",
        "--network=none",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        // A private IPC namespace without /dev/shm (64 MiB of writable tmpfs otherwise).
        "--ipc=none",
        "--cpus",
        "1",
        "--workdir",
        TMP,
    ]);
    let pairs: Vec<(&str, String)> = vec![
        ("--user", format!("{}:{}", u.uid, u.gid)),
        (
            "--security-opt",
            format!("seccomp={}", s.seccomp.to_string_lossy()),
        ),
        // The pids cgroup counts the init too, as the native limit does.
        ("--pids-limit", pids_limit(s).to_string()),
        ("--memory", l.memory_bytes.to_string()),
        ("--memory-swap", l.memory_bytes.to_string()),
        ("--tmpfs", tmpfs_option(l)),
        ("--ulimit", format!("nofile={0}:{0}", l.open_files)),
        ("--ulimit", format!("nproc={0}:{0}", s.nproc)),
        ("--ulimit", "core=0:0".into()),
        ("--ulimit", format!("fsize={0}:{0}", l.file_size_bytes)),
        (
            "--ulimit",
            format!("cpu={}:{}", l.cpu_seconds, l.cpu_seconds.saturating_add(1)),
        ),
        (
            "--ulimit",
            format!("sigpending={0}:{0}", s.fixed.pending_signals),
        ),
        (
            "--ulimit",
            format!("msgqueue={0}:{0}", s.fixed.message_queue_bytes),
        ),
        ("--ulimit", "rtprio=0:0".into()),
        ("--ulimit", "nice=0:0".into()),
        ("--name", s.name.to_owned()),
    ];
    for (k, v) in pairs {
        a.push(k.into());
        a.push(v);
    }
    match &s.init {
        Init::Path(p) => {
            a.push("--init".into());
            a.push("--init-path".into());
            a.push(p.to_string_lossy().into_owned());
        }
        Init::Daemon => a.push("--init".into()),
        Init::None => {}
    }
    if s.engine.kind == EngineKind::Podman {
        // No extra writable tmpfs on /run and /var/tmp; no anonymous volume for an image
        // VOLUME (writable and unbounded on the host's disk); the pidfile tells a started
        // container from an engine failure; --timeout kills it even if upm dies.
        a.push("--read-only-tmpfs=false".into());
        a.push("--image-volume=ignore".into());
        a.push("--pidfile".into());
        a.push(s.pidfile.to_string_lossy().into_owned());
        a.push("--timeout".into());
        a.push(engine_timeout_s(l.timeout_ms).to_string());
    }
    for e in &s.env {
        a.push("--env".into());
        a.push(e.clone());
    }
    a.push("--entrypoint".into());
    a.push(s.argv[0].clone());
    a.push(s.image.to_owned());
    a.extend(s.argv[1..].iter().cloned());
    a
}

pub(super) fn pids_limit(s: &Spec<'_>) -> u64 {
    let l = s.policy.limits.max_processes;
    match s.init {
        Init::None => l,
        _ => l.saturating_add(1),
    }
}

pub(super) fn summary(
    s: &Spec<'_>,
    profile: &seccomp::Profile,
    engine_profile: &seccomp::EngineProfile,
    info: &EngineInfo,
) -> Value {
    let l = &s.policy.limits;
    let u = &s.policy.user;
    let mut limits = json!({
        "timeout_ms": l.timeout_ms,
        "cpu_seconds": l.cpu_seconds,
        "memory_bytes": l.memory_bytes,
        "max_processes": l.max_processes,
        "file_size_bytes": l.file_size_bytes,
        "disk_bytes": l.disk_bytes,
        "open_files": l.open_files,
        "output_bytes": l.output_bytes,
        "core_dumps": false,
        "pending_signals": s.fixed.pending_signals,
        "message_queue_bytes": s.fixed.message_queue_bytes,
        "realtime_priority": 0,
        "raise_priority": false,
        "process_count": format!(
            "the container's pids cgroup (--pids-limit {}, its init included); RLIMIT_NPROC is {} (it would count every process of the uid on the host)",
            pids_limit(s),
            s.nproc
        ),
    });
    let cgroup = match &s.degraded {
        None => json!({
            "state": "enforced",
            "engine": info.detail(),
            "controllers": NEEDED_CONTROLLERS.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        }),
        Some(unenforced) => {
            // Say plainly which numbers above are not in force.
            for (key, what) in [
                ("memory_bytes", NEEDED_CONTROLLERS[0].1),
                ("max_processes", NEEDED_CONTROLLERS[1].1),
            ] {
                if unenforced.contains(&what) {
                    limits[key] = json!(format!(
                        "not enforced (degraded): {} requested",
                        limits[key]
                    ));
                }
            }
            json!({
                "state": "degraded",
                "engine": info.detail(),
                "not_enforced": unenforced,
            })
        }
    };
    let mut writable = vec![json!({"path": TMP, "tmpfs": tmpfs_option(l)})];
    writable.push(json!({
        "path": "/dev/mqueue",
        "what": "POSIX message queues, at most message_queue_bytes for the uid (shared with the uid's host processes: no user namespace)",
    }));
    json!({
        "backend": "container",
        "engine": s.engine.kind.as_str(),
        "engine_path": s.engine.path,
        "runtime": match (&s.engine.runtime, &info.default_runtime) {
            (Some(path), _) => json!(path),
            (None, Some(name)) => json!(format!("{name} (the daemon's default)")),
            (None, None) => Value::Null,
        },
        "image": s.image,
        "command": s.argv,
        "container_name": s.name,
        "network": "none",
        "ipc": "private, no /dev/shm",
        "image_volumes": match s.engine.kind {
            EngineKind::Podman => "ignored (--image-volume=ignore)",
            EngineKind::Docker => "none (an image with VOLUME is refused)",
        },
        "init": s.init.report(),
        "user": format!("{}:{}", u.uid, u.gid),
        "read_only_rootfs": true,
        "writable": writable,
        "capabilities": "none",
        "no_new_privileges": true,
        "seccomp": {
            "profile": profile.name,
            "file": s.policy.seccomp_file(),
            "built_in": s.policy.seccomp_file().is_none(),
            "digest": profile.digest,
            "engine_profile_digest": engine_profile.digest,
            "path": s.seccomp,
            "upm_rules": engine_profile.upm_rules,
        },
        "cgroup_limits": cgroup,
        "limits": limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec_args(kind: EngineKind, argv: &[&str]) -> Vec<String> {
        let engine = Engine {
            kind,
            path: PathBuf::from("/usr/bin/podman"),
            runtime: (kind == EngineKind::Podman).then(|| PathBuf::from("/usr/sbin/runc")),
        };
        let policy = Policy::default();
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        run_args(&Spec {
            engine: &engine,
            policy: &policy,
            image: "localhost/x@sha256:00",
            argv: &argv,
            name: "upm-r-1",
            seccomp: Path::new("/cfg/policies/default.json"),
            pidfile: Path::new("/tmp/upm-r-1/container.pid"),
            env: vec!["PATH=/usr/bin".into()],
            fixed: limits::Fixed {
                pending_signals: 1024,
                message_queue_bytes: 819_200,
            },
            init: match kind {
                EngineKind::Podman => Init::Path(PathBuf::from("/usr/libexec/podman/catatonit")),
                EngineKind::Docker => Init::Daemon,
            },
            nproc: 32768,
            degraded: None,
        })
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn argv_has_every_isolation_flag() {
        let a = spec_args(EngineKind::Podman, &["/bin/plugin", "--flag", "x y"]);
        assert_eq!(&a[..3], ["--runtime", "/usr/sbin/runc", "run"]);
        for f in [
            "--rm",
            "-i",
            "--pull=never",
            "--network=none",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--read-only-tmpfs=false",
            "--image-volume=ignore",
            "--ipc=none",
            "--init",
        ] {
            assert!(a.iter().any(|x| x == f), "missing {f}: {a:?}");
        }
        assert_eq!(value_after(&a, "--user"), ["65534:65534"]);
        assert_eq!(
            value_after(&a, "--security-opt"),
            ["seccomp=/cfg/policies/default.json"]
        );
        // The init is one of the processes the pids cgroup counts.
        assert_eq!(value_after(&a, "--pids-limit"), ["65"]);
        assert_eq!(
            value_after(&a, "--init-path"),
            ["/usr/libexec/podman/catatonit"]
        );
        assert_eq!(value_after(&a, "--memory"), ["1073741824"]);
        assert_eq!(
            value_after(&a, "--ulimit"),
            [
                "nofile=256:256",
                // Not the call's limit: RLIMIT_NPROC counts the uid's host processes.
                "nproc=32768:32768",
                "core=0:0",
                "fsize=16777216:16777216",
                "cpu=10:11",
                "sigpending=1024:1024",
                "msgqueue=819200:819200",
                "rtprio=0:0",
                "nice=0:0",
            ]
        );
        assert_eq!(
            value_after(&a, "--tmpfs"),
            ["/tmp:rw,noexec,nosuid,nodev,size=67108864"]
        );
        assert_eq!(value_after(&a, "--timeout"), ["12"]);
        // The command comes last, after the image, as separate arguments.
        let n = a.len();
        assert_eq!(
            &a[n - 5..],
            [
                "--entrypoint",
                "/bin/plugin",
                "localhost/x@sha256:00",
                "--flag",
                "x y"
            ]
        );
    }

    #[test]
    fn docker_gets_no_podman_only_flags() {
        let a = spec_args(EngineKind::Docker, &["/bin/plugin"]);
        assert_eq!(a[0], "run");
        for f in [
            "--pidfile",
            "--timeout",
            "--read-only-tmpfs=false",
            "--image-volume=ignore",
            "--init-path",
            "--runtime",
        ] {
            assert!(!a.iter().any(|x| x == f), "{f} in {a:?}");
        }
    }

    #[test]
    fn docker_gets_init_and_ipc_none() {
        let a = spec_args(EngineKind::Docker, &["/bin/plugin"]);
        for f in ["--init", "--ipc=none"] {
            assert!(a.iter().any(|x| x == f), "missing {f}: {a:?}");
        }
    }

    #[test]
    fn engine_timeout_is_capped_for_podman() {
        assert_eq!(engine_timeout_s(10_000), 12);
        assert_eq!(engine_timeout_s(u64::MAX), i32::MAX as u64);
    }

    #[test]
    fn container_names_are_valid_and_unique() {
        let a = container_name("req:1/../x y");
        let b = container_name("req:1/../x y");
        assert_ne!(a, b);
        assert!(a.starts_with("upm-req_1_.._x_y-"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    }
}
