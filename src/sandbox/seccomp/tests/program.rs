//! The plan and the emitted program, run on the interpreter: precedence, upm's own
//! rules, the ABI guard, 64-bit comparisons, far jumps and the size limit.

use super::*;

fn block_of(plan: &Plan, nr: i64) -> &Block {
    let nr = u32::try_from(nr).unwrap();
    let i = plan.ranges.partition_point(|r| r.0 <= nr) - 1;
    &plan.blocks[plan.ranges[i].1]
}

#[test]
fn plan_orders_checks_by_precedence_then_group() {
    let p = parse(SYNTHETIC_DENY).unwrap();
    let plan = Plan::new(
        p.parsed().unwrap(),
        &CompileOptions::default(),
        &target(NATIVE_GO_ARCH, 6, 18),
    );
    let actions = |nr| {
        let b = block_of(&plan, nr);
        let mut a: Vec<_> = b.checks.iter().map(|c| c.action).collect();
        a.push(b.otherwise);
        a
    };
    // KILL first; EINVAL's group (22) appears after EACCES's (13), so it is tried first.
    assert_eq!(
        actions(nr("getpid")),
        vec![
            Action::KillThread,
            Action::Errno(22),
            Action::Errno(13),
            Action::Allow,
            Action::Errno(38)
        ]
    );
    // An unconditional ERRNO makes the LOG rule below it unreachable.
    assert_eq!(
        actions(nr("uname")),
        vec![Action::KillProcess, Action::Errno(13)]
    );
    assert_eq!(
        *block_of(&plan, nr("seccomp")),
        Block::ret(Action::KillThread)
    );
    assert_eq!(*block_of(&plan, 1023), Block::ret(Action::Errno(38)));
    assert_eq!(
        *block_of(&plan, i64::from(u32::MAX)),
        Block::ret(Action::Errno(38))
    );
    // Neighbouring numbers with equal decisions share a range; ranges start at 0.
    assert_eq!(plan.ranges[0], (0, plan.ranges[0].1));
    assert!(plan
        .ranges
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1));
    let read_write = block_of(&plan, nr("read"));
    assert_eq!(read_write, block_of(&plan, nr("write")));
    assert_eq!(*read_write, Block::ret(Action::Allow));
}

#[test]
fn network_rules_rank_after_the_profile_groups() {
    let p = parse(SYNTHETIC_DENY).unwrap();
    let opts = CompileOptions {
        deny_sockets: true,
        allow_tcp: false,
    };
    let plan = Plan::new(p.parsed().unwrap(), &opts, &target(NATIVE_GO_ARCH, 6, 18));
    let b = block_of(&plan, libc::SYS_socket);
    let actions: Vec<_> = b.checks.iter().map(|c| c.action).collect();
    // The profile's explicit KILL still wins; otherwise upm's refusal of every
    // family, whatever the profile's own (conditional) rules for socket() say.
    assert_eq!(actions, vec![Action::KillProcess]);
    assert_eq!(b.otherwise, Action::Errno(libc::EAFNOSUPPORT as u32));
    let without = Plan::new(
        p.parsed().unwrap(),
        &CompileOptions::default(),
        &target(NATIVE_GO_ARCH, 6, 18),
    );
    let b = block_of(&without, libc::SYS_socket);
    let actions: Vec<_> = b.checks.iter().map(|c| c.action).collect();
    assert_eq!(
        actions,
        vec![Action::KillProcess, Action::Errno(22), Action::Allow]
    );
    // The profile's EACCES group comes first, so upm's ENOSYS wins for io_uring_setup,
    // with or without network.
    for plan in [&plan, &without] {
        assert_eq!(
            *block_of(plan, libc::SYS_io_uring_setup),
            Block::ret(Action::Errno(libc::ENOSYS as u32))
        );
    }
}

#[test]
fn default_policy_is_one_small_program() {
    let p = Profile::load(Path::new(DEFAULT_POLICY)).unwrap();
    let t = target(NATIVE_GO_ARCH, 6, 18);
    for opts in both_network_options() {
        let compiled = p.compile_for(&opts, &t).unwrap();
        let stack: usize = oracle::stack(&p, &opts, &t).iter().map(Vec::len).sum();
        let plan = Plan::new(p.parsed().unwrap(), &opts, &t);
        println!(
            "default.json (sockets denied: {}): {} instructions in 1 filter, {} ranges, {} blocks (the stack: {stack})",
            opts.deny_sockets,
            compiled.instruction_count(),
            plan.ranges.len(),
            plan.blocks.len()
        );
        assert_eq!(compiled.filter_count(), 1);
        assert!(
            compiled.instruction_count() < 300,
            "{}",
            compiled.instruction_count()
        );
    }
    let d = Profile::load(Path::new(DOCKER_PROFILE)).unwrap();
    let compiled = d.compile_for(&CompileOptions::default(), &t).unwrap();
    println!(
        "docker-default.json: {} instructions",
        compiled.instruction_count()
    );
    assert!(compiled.instruction_count() < 400);
}

#[test]
fn allow_all_profile_is_the_guard_and_upms_own_rules() {
    let p = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    let compiled = p
        .compile_for(&CompileOptions::default(), &target(NATIVE_GO_ARCH, 6, 18))
        .unwrap();
    assert_eq!(compiled.filter_count(), 1);
    assert!(
        compiled.instruction_count() <= 200,
        "{:?}",
        compiled.programs
    );
    let prog = &compiled.programs[0];
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    for nr in 0..460u32 {
        let want = if SYSV_IPC.contains(&i64::from(nr)) || ALWAYS_ENOSYS.contains(&i64::from(nr)) {
            enosys
        } else {
            libc::SECCOMP_RET_ALLOW
        };
        assert_eq!(run(prog, &Data::native(nr, [0; 6])), want, "syscall {nr}");
    }
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    for (nr, arg, flags) in MODE_SETTERS {
        let nr = u32::try_from(nr).unwrap();
        if let Some(f) = flags {
            // Without O_CREAT or O_TMPFILE the mode argument means nothing.
            let mut args = [0; 6];
            args[usize::from(arg)] = 0o4755;
            assert_eq!(run(prog, &Data::native(nr, args)), libc::SECCOMP_RET_ALLOW);
            args[usize::from(f)] = libc::O_TMPFILE as u64 | libc::O_RDWR as u64;
            assert_eq!(run(prog, &Data::native(nr, args)), eperm, "O_TMPFILE");
        }
        for (mode, want) in [
            (0o755, libc::SECCOMP_RET_ALLOW),
            (0o4755, eperm),
            (0o2755, eperm),
            (0o6000, eperm),
            (0o1777, libc::SECCOMP_RET_ALLOW),
            // The kernel reads a mode's low bits only.
            (0xffff_ffff_0000_0000 | 0o755, libc::SECCOMP_RET_ALLOW),
            (0xffff_ffff_0000_0000 | 0o4755, eperm),
        ] {
            let mut args = [0; 6];
            args[usize::from(arg)] = mode;
            if let Some(f) = flags {
                args[usize::from(f)] = (libc::O_CREAT | libc::O_WRONLY) as u64;
            }
            assert_eq!(
                run(prog, &Data::native(nr, args)),
                want,
                "syscall {nr} mode {mode:o}"
            );
        }
    }
    assert_eq!(
        run(prog, &Data::native(u32::MAX, [0; 6])),
        libc::SECCOMP_RET_KILL_PROCESS
    );
}

#[test]
fn abi_guard_checks_arch_then_x32_bit() {
    let p = parse(MIXED).unwrap();
    let compiled = p
        .compile_for(&CompileOptions::default(), &target(NATIVE_GO_ARCH, 6, 18))
        .unwrap();
    let prog = &compiled.programs[0];
    assert_eq!((prog[0].code, prog[0].k), (BPF_LD_W_ABS, SECCOMP_DATA_ARCH));
    assert_eq!((prog[1].code, prog[1].k), (BPF_JEQ_K, NATIVE_AUDIT_ARCH));
    assert_eq!((prog[2].code, prog[2].k), (BPF_LD_W_ABS, SECCOMP_DATA_NR));
    #[cfg(target_arch = "x86_64")]
    assert_eq!((prog[3].code, prog[3].k), (BPF_JGE_K, X32_SYSCALL_BIT));
    let kill = libc::SECCOMP_RET_KILL_PROCESS;
    let read = u32::try_from(nr("read")).unwrap();
    let foreign = Data {
        nr: read,
        arch: 0x4000_0003,
        args: [0; 6],
    };
    assert_eq!(run(prog, &foreign), kill);
    assert_eq!(
        run(prog, &Data::native(read, [0; 6])),
        libc::SECCOMP_RET_ALLOW
    );
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        run(prog, &Data::native(read | X32_SYSCALL_BIT, [0; 6])),
        kill
    );
}

#[test]
fn comparisons_are_64_bit_and_unsigned() {
    let values = [
        0,
        1,
        5,
        0xffff_ffff,
        1 << 32,
        0x1_0000_0005,
        1 << 63,
        u64::MAX - 1,
        u64::MAX,
    ];
    let masks = [
        0,
        1,
        0xff,
        0xffff_ffff,
        0xffff_ffff_0000_0000,
        0xff00_0000_00ff,
        u64::MAX,
    ];
    let mut conds = Vec::new();
    for &value in &values {
        for op in [
            SeccompCmpOp::Eq,
            SeccompCmpOp::Ne,
            SeccompCmpOp::Lt,
            SeccompCmpOp::Le,
            SeccompCmpOp::Gt,
            SeccompCmpOp::Ge,
        ] {
            conds.push(Cond {
                index: 3,
                op,
                value,
            });
        }
        for &mask in &masks {
            conds.push(Cond {
                index: 3,
                op: SeccompCmpOp::MaskedEq(mask),
                value: value & mask,
            });
        }
    }
    for cond in conds {
        let block = Block {
            checks: vec![Check {
                action: Action::Allow,
                conds: vec![cond.clone()],
            }],
            otherwise: Action::Errno(1),
        };
        let plan = Plan {
            blocks: vec![block],
            ranges: vec![(0, 0)],
        };
        let prog = bpf::emit(&plan);
        for x in boundary_values(&cond).into_iter().chain(values) {
            let mut args = [0; 6];
            args[3] = x;
            let got = run(&prog, &Data::native(7, args)) == libc::SECCOMP_RET_ALLOW;
            assert_eq!(got, holds(&cond, x), "{cond:?} on {x:#x}");
        }
    }
}

/// Distinct conditional blocks for many syscalls, each out of 8-bit reach of the search.
fn wide_profile(syscalls: usize, alternatives: u64) -> Profile {
    let entries: Vec<String> = syscalls::NATIVE
        .iter()
        .take(syscalls)
        .enumerate()
        .flat_map(|(i, (name, _))| {
            (0..alternatives).map(move |a| {
                let v = (i as u64 + 1) * 0x1_0000_0001 + a;
                format!(
                    r#"{{"names":["{name}"],"action":"SCMP_ACT_ALLOW","args":[{{"index":0,"value":{v},"op":"SCMP_CMP_EQ"}},{{"index":1,"value":{a},"op":"SCMP_CMP_GE"}}]}}"#
                )
            })
        })
        .collect();
    let json = format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
        entries.join(",")
    );
    parse(&json).unwrap()
}

#[test]
fn far_targets_go_through_trampolines() {
    let p = wide_profile(200, 1);
    let h = target(NATIVE_GO_ARCH, 6, 18);
    let compiled = p.compile_for(&CompileOptions::default(), &h).unwrap();
    let prog = &compiled.programs[0];
    println!("wide profile: {} instructions", prog.len());
    let far = prog
        .iter()
        .filter(|i| i.code == BPF_JA && i.k > MAX_JUMP as u32)
        .count();
    assert!(far > 10, "{far} far jumps in {} instructions", prog.len());
    assert_equivalent(&p, &CompileOptions::default(), &h);
}

#[test]
fn programs_above_the_kernel_limit_are_refused() {
    let p = wide_profile(300, 4);
    let err = p
        .compile_for(&CompileOptions::default(), &target(NATIVE_GO_ARCH, 6, 18))
        .unwrap_err();
    assert!(
        matches!(err, SeccompError::ProgramTooLarge { instructions, .. } if instructions > BPF_MAXINSNS),
        "{err}"
    );
    assert!(err.to_string().contains("4096"), "{err}");
}

#[test]
fn native_syscall_numbers_fit_the_search() {
    assert!(syscalls::NATIVE
        .iter()
        .all(|(_, nr)| (0..1024).contains(nr)));
}
