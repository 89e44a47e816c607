//! The profile a container engine is handed: upm's rules in it, as disjoint entries.

use super::*;
use crate::sandbox::seccomp::engine::{self, NATIVE_SCMP_ARCH};

/// Whether `c` holds for the call's arguments.
fn holds_args(c: &Cond, args: &[u64; 6]) -> bool {
    holds(c, args[usize::from(c.index)])
}

/// What upm's own filter answers (the block's checks in order, then `otherwise`).
fn upm_answer(b: &Block, args: &[u64; 6]) -> Action {
    b.checks
        .iter()
        .find(|c| c.conds.iter().all(|x| holds_args(x, args)))
        .map_or(b.otherwise, |c| c.action)
}

/// What an engine answers whatever order it ranks rules in: every matching entry
/// must agree (else the answer would depend on the library), none means the default.
fn engine_answer(entries: &[(Action, Vec<Cond>)], default: Action, args: &[u64; 6]) -> Action {
    let matching: Vec<Action> = entries
        .iter()
        .filter(|(_, conds)| conds.iter().all(|c| holds_args(c, args)))
        .map(|(a, _)| *a)
        .collect();
    assert!(
        matching.windows(2).all(|w| w[0] == w[1]),
        "overlapping entries disagree for {args:?}: {matching:?}"
    );
    matching.first().copied().unwrap_or(default)
}

/// Arguments that exercise every condition upm's rules and these profiles use.
fn sample_args() -> Vec<[u64; 6]> {
    let flags = [
        0,
        libc::O_CREAT as u64,
        libc::O_TMPFILE as u64,
        (libc::O_CREAT | libc::O_WRONLY) as u64,
        libc::O_RDWR as u64,
    ];
    let modes = [
        0o644,
        0o4755,
        0o2755,
        0o6755,
        0o1777,
        0xffff_ffff_0000_0000 | 0o4000,
    ];
    let mut out = Vec::new();
    for first in [0u64, 1, 2, 5, 10, 40, 0x7e02_0000] {
        for f in flags {
            for m in modes {
                for t in 0..20u64 {
                    out.push([first, t | (f & 0x80000), f, m, m, 0]);
                    out.push([first, m, f, m, 0, 0]);
                }
            }
        }
    }
    out
}

/// The engine's entries for one syscall, read back from the generated JSON.
fn entries_for(json: &serde_json::Value, name: &str) -> Vec<(Action, Vec<Cond>)> {
    let p = Profile::from_json("gen", &serde_json::to_vec(json).unwrap()).unwrap();
    let nr = nr(name);
    p.parsed()
        .unwrap()
        .entries
        .iter()
        .filter(|e| e.nrs.contains(&nr))
        .map(|e| (e.action, e.conds.clone()))
        .collect()
}

fn check_engine_profile(p: &Profile) {
    let h = target(NATIVE_GO_ARCH, 6, 8);
    let gen = engine::build(p, &h).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&gen.bytes).unwrap();
    assert_eq!(json["architectures"], serde_json::json!([NATIVE_SCMP_ARCH]));
    assert!(json.get("archMap").is_none());
    assert!(gen.digest.starts_with("sha256:"));
    assert_eq!(gen.upm_rules.len(), OWN_RULE_NAMES.len());
    let opts = CompileOptions {
        deny_sockets: true,
        allow_tcp: false,
    };
    let mut ranked = plan::ranked(p.parsed().unwrap(), &opts, &h);
    ranked.sort_by_key(|(rank, r)| (r.nr, std::cmp::Reverse(*rank)));
    let own: std::collections::BTreeSet<i64> = own_rules(&opts).iter().map(|r| r.nr).collect();
    for nr in own {
        let name = syscalls::NATIVE.iter().find(|(_, n)| *n == nr).unwrap().0;
        let rules: Vec<_> = ranked.iter().filter(|(_, r)| r.nr == nr).cloned().collect();
        let block = Block::decide(&rules, p.parsed().unwrap().default_action);
        let entries = entries_for(&json, name);
        assert!(!entries.is_empty(), "{name}: no entry");
        for args in sample_args() {
            assert_eq!(
                engine_answer(&entries, p.parsed().unwrap().default_action, &args),
                upm_answer(&block, &args),
                "{}: {name} with {args:?}",
                p.name
            );
        }
    }
}

#[test]
fn engine_profile_carries_upms_rules_as_disjoint_entries() {
    for path in [DEFAULT_POLICY, DOCKER_PROFILE] {
        let p = Profile::load(Path::new(path)).unwrap();
        check_engine_profile(&p);
    }
    let p = Profile::load(Path::new(DEFAULT_POLICY)).unwrap();
    let json: serde_json::Value = serde_json::from_slice(
        &engine::build(&p, &target(NATIVE_GO_ARCH, 6, 8))
            .unwrap()
            .bytes,
    )
    .unwrap();
    // socket: one unconditional EAFNOSUPPORT, whatever the profile allowed.
    assert_eq!(
        entries_for(&json, "socket"),
        [(Action::Errno(libc::EAFNOSUPPORT as u32), vec![])]
    );
    assert_eq!(
        entries_for(&json, "shmget"),
        [(Action::Errno(libc::ENOSYS as u32), vec![])]
    );
    // The profile's other syscalls are untouched.
    assert!(entries_for(&json, "read")
        .iter()
        .any(|(a, c)| *a == Action::Allow && c.is_empty()));
}

#[test]
fn engine_profile_keeps_upms_precedence_over_odd_profiles() {
    for json in [
        // A KILL for SysV wins over upm's ENOSYS, as natively.
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["shmget","openat","read"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        // Conditional rules of several actions on the same syscalls.
        r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[
            {"names":["openat"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":5,"op":"SCMP_CMP_EQ"}]},
            {"names":["openat"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":2,"value":1,"valueTwo":1,"op":"SCMP_CMP_MASKED_EQ"}]},
            {"names":["socketpair"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
            {"names":["chmod","fchmod"],"action":"SCMP_ACT_LOG"},
            {"names":["socket"],"action":"SCMP_ACT_TRAP","args":[{"index":0,"value":10,"op":"SCMP_CMP_EQ"}]}]}"#,
        // An ALLOW default: upm's rules still bite.
        r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#,
    ] {
        check_engine_profile(&parse(json).unwrap());
    }
}

#[test]
fn engine_profile_refuses_what_it_cannot_express() {
    // Two comparisons of the mode argument in one entry would become an OR in runc.
    let p = parse(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
        {"names":["chmod"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":448,"op":"SCMP_CMP_LT"}]}]}"#,
    )
    .unwrap();
    let err = engine::build(&p, &target(NATIVE_GO_ARCH, 6, 8)).unwrap_err();
    assert!(matches!(err, SeccompError::EngineProfile { .. }), "{err}");
}
