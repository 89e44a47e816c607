//! Parsing: the syscall-name table, the wire format and its errors, and key
//! resolution (includes, excludes, minKernel) for a kernel and arch.

use super::*;

// ---- syscall table ----

#[test]
fn syscall_tables_are_sorted_for_binary_search() {
    assert!(syscalls::NATIVE.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(syscalls::ANY_ARCH.windows(2).all(|w| w[0] < w[1]));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn native_numbers_match_the_kernel_abi() {
    assert_eq!(syscalls::native_number("read"), Some(0));
    assert_eq!(syscalls::native_number("clone3"), Some(435));
    assert_eq!(syscalls::native_number("listns"), Some(470));
    assert_eq!(syscalls::native_number("chown32"), None);
    assert!(syscalls::known_on_any_arch("chown32"));
    assert!(syscalls::known_on_any_arch("set_tls"));
    assert!(!syscalls::known_on_any_arch("not_a_syscall"));
    // The hash index finds every native name, and nothing else.
    for (name, nr) in syscalls::NATIVE {
        assert_eq!(syscalls::native_number(name), Some(*nr), "{name}");
    }
    for not_native in ["", "rea", "readd", "READ", "chown32", "set_tls", "x"] {
        assert_eq!(syscalls::native_number(not_native), None, "{not_native}");
    }
}

// ---- parsing and errors ----

#[test]
fn shipped_and_docker_profiles_parse() {
    let p = Profile::load(Path::new(DEFAULT_POLICY)).unwrap();
    assert_eq!(p.name, "default");
    assert!(p.digest.starts_with("sha256:") && p.digest.len() == 7 + 64);
    assert_eq!(p.parsed().unwrap().default_action, Action::Errno(1));
    let d = Profile::load(Path::new(DOCKER_PROFILE)).unwrap();
    assert_eq!(d.name, "docker-default");
    assert_ne!(p.digest, d.digest);
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    let cases = [
        r#"{"defaultAction":"SCMP_ACT_ERRNO","bogus":1}"#,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","nmes":[]}]}"#,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ","valu":2}]}]}"#,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"kernel":"4.8"}}]}"#,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subs":[]}]}"#,
    ];
    for case in cases {
        let err = parse(case).unwrap_err();
        assert!(matches!(err, SeccompError::Parse { .. }), "{case}: {err}");
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}

#[test]
fn malformed_json_and_missing_default_action_are_errors() {
    assert!(matches!(parse("{"), Err(SeccompError::Parse { .. })));
    assert!(matches!(
        parse(r#"{"syscalls":[]}"#),
        Err(SeccompError::Parse { .. })
    ));
    assert!(matches!(
        parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":-1}"#),
        Err(SeccompError::Parse { .. })
    ));
}

#[test]
fn unknown_and_refused_actions_are_errors() {
    let err = parse(r#"{"defaultAction":"SCMP_ACT_DENY"}"#).unwrap_err();
    assert!(
        matches!(err, SeccompError::UnknownAction { ref location, .. } if location == "defaultAction")
    );
    let err = parse(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"allow"}]}"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, SeccompError::UnknownAction { ref location, .. } if location == "syscalls[0]")
    );
    for refused in ["SCMP_ACT_TRACE", "SCMP_ACT_NOTIFY"] {
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["read"],"action":"{refused}"}}]}}"#
        );
        assert!(
            matches!(parse(&json), Err(SeccompError::RefusedAction { .. })),
            "{refused}"
        );
    }
}

#[test]
fn errno_rules() {
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1}"#).unwrap_err();
    assert!(
        matches!(err, SeccompError::ErrnoWithoutErrnoAction { .. }),
        "{err}"
    );
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_KILL","errnoRet":1}]}"#).unwrap_err();
    assert!(
        matches!(err, SeccompError::ErrnoWithoutErrnoAction { .. }),
        "{err}"
    );
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":4096}"#).unwrap_err();
    assert!(
        matches!(err, SeccompError::ErrnoOutOfRange { value: 4096, .. }),
        "{err}"
    );
    // defaultErrnoRet is the default action's errno only; a rule without errnoRet gets EPERM.
    let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO"},{"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#).unwrap();
    assert_eq!(p.parsed().unwrap().default_action, Action::Errno(38));
    assert_eq!(
        p.parsed().unwrap().entries[0].action,
        Action::Errno(libc::EPERM as u32)
    );
    assert_eq!(p.parsed().unwrap().entries[1].action, Action::Errno(13));
    let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).unwrap();
    assert_eq!(
        p.parsed().unwrap().default_action,
        Action::Errno(libc::EPERM as u32)
    );
}

#[test]
fn syscall_names_unknown_everywhere_are_errors_but_foreign_ones_are_skipped() {
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","raed"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap_err();
    assert!(
        matches!(err, SeccompError::UnknownSyscall { entry: 0, ref name, .. } if name == "raed"),
        "{err}"
    );
    assert!(err.to_string().contains("\"raed\""));
    let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","chown32","_llseek"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap();
    let rules = resolve::rules(p.parsed().unwrap(), &target(NATIVE_GO_ARCH, 6, 18));
    assert_eq!(
        rules.iter().map(|r| r.nr).collect::<Vec<_>>(),
        vec![nr("read")]
    );
    let err = parse(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap_err();
    assert!(matches!(err, SeccompError::NoSyscallNames { .. }));
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","names":["write"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap_err();
    assert!(matches!(err, SeccompError::NameAndNames { .. }));
    let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW"}]}"#).unwrap();
    assert_eq!(p.parsed().unwrap().entries[0].nrs, vec![nr("read")]);
}

#[test]
fn argument_errors() {
    let with_args = |args: &str| {
        parse(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["read"],"action":"SCMP_ACT_ALLOW","args":{args}}}]}}"#
        ))
    };
    let err = with_args(r#"[{"index":0,"value":1,"op":"SCMP_CMP_EQUAL"}]"#).unwrap_err();
    assert!(
        matches!(err, SeccompError::UnknownOperator { ref op, .. } if op == "SCMP_CMP_EQUAL"),
        "{err}"
    );
    let err = with_args(r#"[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]"#).unwrap_err();
    assert!(
        matches!(err, SeccompError::BadArgIndex { index: 6, .. }),
        "{err}"
    );
    let err = with_args(
        r#"[{"index":0,"value":1,"op":"SCMP_CMP_GE"},{"index":0,"value":5,"op":"SCMP_CMP_LE"}]"#,
    )
    .unwrap_err();
    assert!(
        matches!(err, SeccompError::RepeatedArgIndex { index: 0, .. }),
        "{err}"
    );
    let err = with_args(r#"[{"index":0,"value":1,"valueTwo":2,"op":"SCMP_CMP_EQ"}]"#).unwrap_err();
    assert!(matches!(err, SeccompError::StrayValueTwo { .. }), "{err}");
    let p = with_args(r#"[{"index":0,"value":255,"valueTwo":3,"op":"SCMP_CMP_MASKED_EQ"},{"index":2,"value":7,"op":"SCMP_CMP_LT"}]"#).unwrap();
    assert_eq!(
        p.parsed().unwrap().entries[0].conds,
        vec![
            Cond {
                index: 0,
                op: SeccompCmpOp::MaskedEq(255),
                value: 3
            },
            Cond {
                index: 2,
                op: SeccompCmpOp::Lt,
                value: 7
            },
        ]
    );
}

#[test]
fn arch_and_top_level_errors() {
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":null}]}"#).unwrap_err();
    assert!(matches!(err, SeccompError::ArchitecturesAndArchMap { .. }));
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_VAX"]}"#)
        .unwrap_err();
    assert!(
        matches!(err, SeccompError::UnknownArch { ref location, .. } if location == "architectures[0]"),
        "{err}"
    );
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["x86_64"]}}]}"#).unwrap_err();
    assert!(matches!(err, SeccompError::UnknownArch { .. }), "{err}");
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMN"]}}]}"#).unwrap_err();
    assert!(
        matches!(err, SeccompError::UnknownCapability { .. }),
        "{err}"
    );
    let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","excludes":{"minKernel":"four"}}]}"#).unwrap_err();
    assert!(
        matches!(
            err,
            SeccompError::BadMinKernel {
                field: "excludes",
                ..
            }
        ),
        "{err}"
    );
    let err =
        parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#)
            .unwrap_err();
    assert!(
        matches!(err, SeccompError::Unsupported { field: "flags", .. }),
        "{err}"
    );
    let err =
        parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","listenerPath":"/run/x.sock"}"#).unwrap_err();
    assert!(
        matches!(
            err,
            SeccompError::Unsupported {
                field: "listenerPath",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn kernel_versions_parse_and_order() {
    assert_eq!(KernelVersion::parse("4.8"), Some(KernelVersion(4, 8, 0)));
    assert_eq!(
        KernelVersion::parse("6.18.44-fc-v669"),
        Some(KernelVersion(6, 18, 44))
    );
    assert_eq!(KernelVersion::parse("5"), None);
    assert_eq!(KernelVersion::parse("5.x"), None);
    assert!(KernelVersion(4, 10, 0) > KernelVersion(4, 8, 0));
    assert!(KernelVersion::running().is_ok());
}

// ---- include / exclude resolution ----

fn resolved_names(p: &Profile, h: &Target) -> Vec<i64> {
    resolve::rules(p.parsed().unwrap(), h)
        .iter()
        .map(|r| r.nr)
        .collect()
}

#[test]
fn includes_and_excludes_follow_docker() {
    let p = parse(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
        {"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64","arm64"]}},
        {"names":["write"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["s390x"]}},
        {"names":["close"],"action":"SCMP_ACT_ALLOW","excludes":{"arches":["amd64"]}},
        {"names":["getpid"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
        {"names":["getppid"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}},
        {"names":["gettid"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}},
        {"names":["uname"],"action":"SCMP_ACT_ALLOW","excludes":{"minKernel":"4.8"}}
    ]}"#,
    )
    .unwrap();
    let new_kernel = target("amd64", 4, 8);
    assert_eq!(
        resolved_names(&p, &new_kernel),
        vec![nr("read"), nr("getppid"), nr("gettid")]
    );
    let old_kernel = target("arm64", 4, 7);
    assert_eq!(
        resolved_names(&p, &old_kernel),
        vec![nr("read"), nr("close"), nr("getppid"), nr("uname")]
    );
}

#[test]
fn docker_default_resolves_like_docker_for_a_capless_container() {
    let d = Profile::load(Path::new(DOCKER_PROFILE)).unwrap();
    let rules = resolve::rules(d.parsed().unwrap(), &target(NATIVE_GO_ARCH, 6, 18));
    let actions_of = |name: &str| {
        rules
            .iter()
            .filter(|r| r.nr == nr(name))
            .map(|r| r.action)
            .collect::<Vec<_>>()
    };
    assert_eq!(actions_of("clone3"), vec![Action::Errno(38)]);
    assert_eq!(actions_of("ptrace"), vec![Action::Allow]); // minKernel 4.8
    assert!(actions_of("mount").is_empty()); // needs CAP_SYS_ADMIN
    assert!(actions_of("bpf").is_empty());
    let clone = rules
        .iter()
        .filter(|r| r.nr == nr("clone"))
        .collect::<Vec<_>>();
    assert_eq!(clone.len(), 1, "only the non-s390 clone rule applies");
    assert_eq!(clone[0].conds[0].op, SeccompCmpOp::MaskedEq(0x7E02_0000));
    assert!(
        actions_of("ptrace").len() == 1
            && resolved_names(&d, &target(NATIVE_GO_ARCH, 4, 7))
                .iter()
                .all(|n| *n != nr("ptrace"))
    );
}

#[test]
fn unsatisfiable_masked_eq_entries_are_dropped() {
    let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
        {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"valueTwo":2,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["write"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":3,"valueTwo":2,"op":"SCMP_CMP_MASKED_EQ"}]}
    ]}"#).unwrap();
    assert_eq!(
        resolved_names(&p, &target("amd64", 6, 18)),
        vec![nr("write")]
    );
}
