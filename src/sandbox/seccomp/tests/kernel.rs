//! Filters installed for real, in forked children: the kernel's answers to the
//! shipped and Docker's profiles, stacked actions, x32 numbers, and the install cost.

use super::*;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Forks; the child applies `filter`, runs `body` and exits with its result.
/// Returns the raw wait status.
fn in_child(filter: &CompiledFilter, body: fn() -> i32) -> i32 {
    // SAFETY: the child only makes syscalls (plus pthread_create in one body) and
    // leaves with _exit, never returning into the test harness.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = match filter.apply() {
                Ok(()) => body(),
                Err(_) => 100,
            };
            libc::_exit(code);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        status
    }
}

pub(super) fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

fn exec_under(filter: &CompiledFilter, argv: &[&str]) -> i32 {
    let cargs: Vec<std::ffi::CString> = argv
        .iter()
        .map(|a| std::ffi::CString::new(*a).unwrap())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: argv is prepared before fork; the child applies, execs or _exits.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if filter.apply().is_err() {
                libc::_exit(100);
            }
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        status
    }
}

pub(super) fn default_filter() -> CompiledFilter {
    Profile::load(Path::new(DEFAULT_POLICY))
        .unwrap()
        .compile(&CompileOptions {
            deny_sockets: true,
            allow_tcp: false,
        })
        .unwrap()
}

extern "C" fn thread_main(_: *mut libc::c_void) -> *mut libc::c_void {
    std::ptr::null_mut()
}

/// Each failing step exits with its own number.
pub(super) fn default_profile_checks() -> i32 {
    // SAFETY: plain syscalls with valid (or null, where allowed) arguments.
    unsafe {
        if libc::getpid() <= 0 {
            return 1;
        }
        if libc::unshare(0) != -1 || errno() != libc::EPERM {
            return 2;
        }
        if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != -1 || errno() != libc::EPERM {
            return 3;
        }
        let none = c"none".as_ptr();
        let tmp = c"/tmp".as_ptr();
        if libc::mount(none, tmp, c"tmpfs".as_ptr(), 0, std::ptr::null()) != -1
            || errno() != libc::EPERM
        {
            return 4;
        }
        if libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) != -1
            || errno() != libc::ENOSYS
        {
            return 5;
        }
        if libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) != -1 || errno() != libc::EAFNOSUPPORT
        {
            return 6;
        }
        // No AF_UNIX socket either (it could connect to a host daemon's pathname
        // socket); a connected pair is fine.
        if libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) != -1 || errno() != libc::EAFNOSUPPORT
        {
            return 7;
        }
        let mut pair = [0; 2];
        if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) != 0 {
            return 12;
        }
        // A datagram pair could sendto() any pathname socket.
        let mut dgram = [0; 2];
        if libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, dgram.as_mut_ptr()) != -1
            || errno() != libc::ESOCKTNOSUPPORT
        {
            return 17;
        }
        // No setuid or setgid bit, however a mode is set; other bits as before. (A
        // path that does not exist: should the filter fail, nothing gets the bit.)
        let nowhere = c"/nonexistent/upm-seccomp-test".as_ptr();
        if libc::chmod(nowhere, 0o4755) != -1 || errno() != libc::EPERM {
            return 13;
        }
        if libc::fchmod(pair[0], 0o2755) != -1 || errno() != libc::EPERM {
            return 14;
        }
        if libc::fchmod(pair[0], 0o755) != 0 {
            return 15;
        }
        libc::close(pair[0]);
        libc::close(pair[1]);
        if libc::syscall(libc::SYS_memfd_create, c"x".as_ptr(), 0) != -1 || errno() != libc::ENOSYS
        {
            return 16;
        }
        let mut tid: libc::pthread_t = 0;
        if libc::pthread_create(
            &mut tid,
            std::ptr::null(),
            thread_main,
            std::ptr::null_mut(),
        ) != 0
            || libc::pthread_join(tid, std::ptr::null_mut()) != 0
        {
            return 8;
        }
        // clone with a namespace flag is refused by the masked-flags rule.
        let flags = (libc::CLONE_NEWNET | libc::SIGCHLD) as libc::c_ulong;
        if libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) != -1 || errno() != libc::EPERM {
            return 9;
        }
        if libc::syscall(libc::SYS_bpf, 0, 0, 0) != -1 || errno() != libc::EPERM {
            return 10;
        }
        if libc::personality(0x0040_0000) != -1 || errno() != libc::EPERM {
            return 11; // READ_IMPLIES_EXEC
        }
    }
    0
}

#[test]
fn kernel_enforces_default_profile() {
    let status = in_child(&default_filter(), default_profile_checks);
    assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
}

/// With an egress allowlist: TCP over IPv4/IPv6 only (issue 22). Each failing step
/// exits with its own number.
fn tcp_only_checks() -> i32 {
    let refused = |family: i64, kind: i64, protocol: i64, want: i32| {
        // SAFETY: socket() with integer arguments; a descriptor made is closed.
        let fd = unsafe { libc::syscall(libc::SYS_socket, family, kind, protocol) };
        if fd >= 0 {
            // SAFETY: our own descriptor.
            unsafe { libc::close(fd as i32) };
            return false;
        }
        errno() == want
    };
    let made = |family: i32, kind: i32, protocol: i32| {
        // SAFETY: as above.
        let fd = unsafe { libc::socket(family, kind, protocol) };
        // SAFETY: our own descriptor.
        fd >= 0 && unsafe { libc::close(fd) } == 0
    };
    let (inet, inet6, stream) = (libc::AF_INET, libc::AF_INET6, libc::SOCK_STREAM);
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let allowed = [
        (inet, stream, 0),
        (inet6, stream, 0),
        (inet, stream | flags, libc::IPPROTO_TCP),
        (inet6, stream | libc::SOCK_CLOEXEC, libc::IPPROTO_TCP),
    ];
    for (i, (f, k, p)) in allowed.into_iter().enumerate() {
        if !made(f, k, p) {
            return 1 + i as i32;
        }
    }
    let (af, kind, proto) = (
        libc::EAFNOSUPPORT,
        libc::ESOCKTNOSUPPORT,
        libc::EPROTONOSUPPORT,
    );
    let refusals: [(i64, i64, i64, i32); 12] = [
        (libc::AF_UNIX as i64, stream as i64, 0, af),
        (libc::AF_NETLINK as i64, libc::SOCK_RAW as i64, 0, af),
        (libc::AF_PACKET as i64, libc::SOCK_RAW as i64, 0, af),
        // Stray high bits never pass for the family or the protocol.
        ((1 << 32) | inet as i64, stream as i64, 0, af),
        (inet as i64, libc::SOCK_DGRAM as i64, 0, kind),
        (inet6 as i64, (libc::SOCK_DGRAM | flags) as i64, 0, kind),
        (
            inet as i64,
            libc::SOCK_RAW as i64,
            libc::IPPROTO_ICMP as i64,
            kind,
        ),
        (inet as i64, libc::SOCK_SEQPACKET as i64, 0, kind),
        (inet as i64, 0, 0, kind),
        (inet as i64, stream as i64, 132, proto),
        (inet as i64, stream as i64, 262, proto),
        (
            inet as i64,
            stream as i64,
            (1 << 32) | libc::IPPROTO_TCP as i64,
            proto,
        ),
    ];
    for (i, (f, k, p, want)) in refusals.into_iter().enumerate() {
        if !refused(f, k, p, want) {
            return 10 + i as i32;
        }
    }
    0
}

#[test]
fn an_egress_allowlist_allows_tcp_sockets_and_nothing_else() {
    let filter = Profile::load(Path::new(DEFAULT_POLICY))
        .unwrap()
        .compile(&CompileOptions {
            deny_sockets: true,
            allow_tcp: true,
        })
        .unwrap();
    let status = in_child(&filter, tcp_only_checks);
    assert_eq!(exit_code(status), Some(0), "wait status {status:#x}");
}

#[test]
fn kernel_runs_python_asyncio_threads_under_default_profile() {
    let code = "import asyncio, json, threading, socket\n\
        t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
        async def main():\n    await asyncio.sleep(0.01)\n    return json.dumps({'ok': 1})\n\
        assert asyncio.run(main()) == '{\"ok\": 1}'\n\
        try:\n    socket.socket(socket.AF_INET)\n    raise SystemExit(3)\n\
        except OSError as e:\n    assert e.errno == 97, e\n";
    let status = exec_under(&default_filter(), &["/usr/bin/python3", "-c", code]);
    assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
}

#[test]
fn kernel_runs_sh_and_coreutils_under_default_profile() {
    let filter = default_filter();
    assert_eq!(
        exit_code(exec_under(&filter, &["/bin/sh", "-c", "true"])),
        Some(0)
    );
    let script = "ls / >/dev/null && cat /etc/passwd | wc -l >/dev/null && d=$(mktemp -d) && \
                  echo hi > $d/f && cp $d/f $d/g && chmod 600 $d/g && rm -r $d && date >/dev/null";
    let status = exec_under(&filter, &["/bin/sh", "-c", script]);
    assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
}

#[test]
fn kernel_runs_sh_under_docker_default_profile() {
    let filter = Profile::load(Path::new(DOCKER_PROFILE))
        .unwrap()
        .compile(&CompileOptions::default())
        .unwrap();
    assert_eq!(filter.filter_count(), 1);
    let status = exec_under(&filter, &["/bin/sh", "-c", "ls / >/dev/null && true"]);
    assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    let status = in_child(&filter, || {
        // SAFETY: plain syscalls.
        unsafe {
            if libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) != -1
                || errno() != libc::ENOSYS
            {
                return 1;
            }
            if libc::unshare(0) != -1 || errno() != libc::EPERM {
                return 2;
            }
        }
        0
    });
    assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
}

/// The stacking rule in the kernel: most restrictive wins, default only on no match.
#[test]
fn kernel_honours_stacked_actions() {
    let p = parse(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
        {"names":["getuid"],"action":"SCMP_ACT_ALLOW"},
        {"names":["getuid"],"action":"SCMP_ACT_ERRNO","errnoRet":22},
        {"names":["getgid"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":0,"value":7,"op":"SCMP_CMP_EQ"}]}
    ]}"#,
    )
    .unwrap();
    let filter = p.compile(&CompileOptions::default()).unwrap();
    let status = in_child(&filter, || {
        // SAFETY: plain syscalls.
        unsafe {
            if libc::syscall(libc::SYS_getppid) != -1 || errno() != libc::EACCES {
                return 1;
            }
            if libc::syscall(libc::SYS_getuid) != -1 || errno() != libc::EINVAL {
                return 2;
            }
            if libc::syscall(libc::SYS_getgid, 0) < 0 || libc::getpid() <= 0 {
                return 3;
            }
        }
        0
    });
    assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    let status = in_child(&filter, || {
        // SAFETY: a syscall the filter kills the process for.
        unsafe { libc::syscall(libc::SYS_getgid, 7) };
        0
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
        "{status:#x}"
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn kernel_kills_x32_syscalls() {
    let allow_all = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    let filter = allow_all.compile(&CompileOptions::default()).unwrap();
    let status = in_child(&filter, || {
        // SAFETY: getpid through the x32 ABI number; the guard kills before it runs.
        unsafe { libc::syscall(libc::SYS_getpid | 0x4000_0000) };
        0
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
        "{status:#x}"
    );
}

/// With one filter nothing is installed after the profile's: it may deny seccomp(2).
#[test]
fn kernel_enforces_a_profile_that_kills_seccomp_itself() {
    let p = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["seccomp"],"action":"SCMP_ACT_KILL"}]}"#).unwrap();
    let filter = p.compile(&CompileOptions::default()).unwrap();
    assert_eq!(filter.filter_count(), 1);
    let status = in_child(&filter, || {
        // SAFETY: plain syscalls; seccomp(SECCOMP_GET_ACTION_AVAIL) reads a valid u32.
        unsafe {
            if libc::getpid() <= 0 {
                return 1;
            }
            let action = libc::SECCOMP_RET_LOG;
            libc::syscall(libc::SYS_seccomp, 2, 0, &action as *const u32);
        }
        0
    });
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
        "{status:#x}"
    );
}

/// Prints the cost of forking children that install the filter, for the old stack and
/// the single program. A measurement, not a test: `cargo test --release --lib
/// sandbox::seccomp::tests::kernel::install_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn install_cost() {
    let p = Profile::load(Path::new(DEFAULT_POLICY)).unwrap();
    let opts = CompileOptions {
        deny_sockets: true,
        allow_tcp: false,
    };
    let h = target(NATIVE_GO_ARCH, 6, 18);
    let single = p.compile_for(&opts, &h).unwrap();
    let stack = CompiledFilter {
        programs: oracle::stack(&p, &opts, &h),
        notifying: None,
    };
    let none = CompiledFilter {
        programs: Vec::new(),
        notifying: None,
    };
    let per_fork = |filter: &CompiledFilter| {
        let n = 2000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert_eq!(exit_code(in_child(filter, || 0)), Some(0));
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    for round in 0..3 {
        let (base, old, new) = (per_fork(&none), per_fork(&stack), per_fork(&single));
        println!(
            "round {round}: fork+exit {base:.1} µs; install: stack of {} ({} insns) {:.1} µs, single ({} insns) {:.1} µs",
            stack.filter_count(),
            stack.instruction_count(),
            old - base,
            single.instruction_count(),
            new - base
        );
        println!(
            "round {round}: getppid() {:.0} ns bare, {:.0} ns under the stack, {:.0} ns under the single program",
            syscall_ns(&none),
            syscall_ns(&stack),
            syscall_ns(&single)
        );
    }
}

/// Nanoseconds per getppid() in a child that installed `filter`.
fn syscall_ns(filter: &CompiledFilter) -> f64 {
    const CALLS: u32 = 200_000;
    let mut fds = [0; 2];
    let mut ns = 0u64;
    // SAFETY: the child only makes syscalls, reads the vDSO clock and _exits; the
    // parent reads 8 bytes into `ns`.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            if filter.apply().is_err() {
                libc::_exit(100);
            }
            let t = std::time::Instant::now();
            for _ in 0..CALLS {
                libc::syscall(libc::SYS_getppid);
            }
            let elapsed = t.elapsed().as_nanos() as u64;
            libc::write(fds[1], (&elapsed as *const u64).cast(), 8);
            libc::_exit(0);
        }
        libc::close(fds[1]);
        assert_eq!(libc::read(fds[0], (&mut ns as *mut u64).cast(), 8), 8);
        libc::close(fds[0]);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
    }
    ns as f64 / f64::from(CALLS)
}
