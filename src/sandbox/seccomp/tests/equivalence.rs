//! Randomized equivalence: the single program against the oracle stack, on every
//! syscall number, the ABI guard's edges, each condition's boundaries and random
//! arguments, for the shipped, Docker's and synthetic profiles.

use super::*;

/// Deterministic xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Checks the single program against the oracle stack; returns how many inputs it ran.
pub(super) fn assert_equivalent(p: &Profile, opts: &CompileOptions, h: &Target) -> usize {
    let compiled = p.compile_for(opts, h).unwrap();
    assert_eq!(compiled.filter_count(), 1);
    let prog = &compiled.programs[0];
    let notifying = compiled.notifying.as_ref().unwrap();
    let stack = oracle::stack(p, opts, h);
    let mut checked = 0;
    let mut check = |d: Data| {
        let (new, old) = (run(prog, &d), run_stack(&stack, &d));
        assert_eq!(
            new, old,
            "{} (sockets denied: {}): {d:x?}: single program {new:#x}, stack {old:#x}",
            p.name, opts.deny_sockets
        );
        // issue 23: the supervised program notifies exactly where this one answers an
        // errno, and the supervisor finds that errno (production's interpreter).
        let errno = (new & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_ERRNO)
            .then_some(new & libc::SECCOMP_RET_DATA);
        let notified = run(notifying, &d);
        let expected = if errno.is_some() {
            libc::SECCOMP_RET_USER_NOTIF
        } else {
            new
        };
        assert_eq!(notified, expected, "{}: {d:x?}: notifying program", p.name);
        assert_eq!(
            compiled.errno_for(&d.bytes()),
            errno,
            "{}: {d:x?}: errno_for",
            p.name
        );
        checked += 1;
    };
    for nr in 0..=1023 {
        check(Data::native(nr, [0; 6]));
    }
    let x32 = [
        0x4000_0000,
        0x4000_0000 | 39,
        0x4000_0000 | 512,
        0x7fff_ffff,
    ];
    for nr in x32.into_iter().chain([0x3fff_ffff, 0x8000_0000, u32::MAX]) {
        check(Data::native(nr, [0; 6]));
    }
    // AUDIT_ARCH_I386, and a zero arch.
    for arch in [0x4000_0003, 0] {
        for nr in [0, 1, 2, 39, 59, 231, 435] {
            check(Data {
                nr,
                arch,
                args: [0; 6],
            });
        }
    }
    let mut by_nr: BTreeMap<i64, Vec<Vec<Cond>>> = BTreeMap::new();
    for (_, rule) in plan::ranked(p.parsed().unwrap(), opts, h) {
        if !rule.conds.is_empty() {
            by_nr.entry(rule.nr).or_default().push(rule.conds);
        }
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (nr, alternatives) in by_nr {
        let nr = u32::try_from(nr).unwrap();
        let mut candidates: [Vec<u64>; 6] = Default::default();
        for c in alternatives.iter().flatten() {
            candidates[usize::from(c.index)].extend(boundary_values(c));
        }
        // Starting points: nothing set, and one vector satisfying each alternative.
        let mut bases = vec![[0u64; 6]];
        for conds in &alternatives {
            let mut args = [0u64; 6];
            for c in conds {
                let slot = usize::from(c.index);
                if let Some(x) = boundary_values(c).into_iter().find(|x| holds(c, *x)) {
                    args[slot] = x;
                }
            }
            assert!(conds.iter().all(|c| holds(c, args[usize::from(c.index)])));
            bases.push(args);
        }
        for base in &bases {
            for (slot, values) in candidates.iter().enumerate() {
                for &x in values {
                    let mut args = *base;
                    args[slot] = x;
                    check(Data::native(nr, args));
                }
            }
        }
        for _ in 0..300 {
            let mut args = *bases.get(rng.next() as usize % bases.len()).unwrap();
            for (slot, values) in candidates.iter().enumerate() {
                args[slot] = match rng.next() % 4 {
                    0 => args[slot],
                    1 if !values.is_empty() => values[rng.next() as usize % values.len()],
                    2 => rng.next() % 16,
                    _ => rng.next(),
                };
            }
            check(Data::native(nr, args));
        }
    }
    checked
}

fn synthetic_profiles() -> Vec<Profile> {
    let mut profiles = vec![
        parse(MIXED).unwrap(),
        parse(SYNTHETIC_DENY).unwrap(),
        parse(SYNTHETIC_ALLOW).unwrap(),
    ];
    // The same rules under every other default.
    for default in ["SCMP_ACT_TRAP", "SCMP_ACT_LOG", "SCMP_ACT_KILL"] {
        let json = SYNTHETIC_ALLOW.replacen("SCMP_ACT_ALLOW", default, 1);
        profiles.push(parse(&json).unwrap());
    }
    profiles
}

#[test]
fn single_program_matches_the_stack_for_shipped_and_docker_profiles() {
    let mut checked = 0;
    for path in [DEFAULT_POLICY, DOCKER_PROFILE] {
        let p = Profile::load(Path::new(path)).unwrap();
        for opts in both_network_options() {
            checked += assert_equivalent(&p, &opts, &target(NATIVE_GO_ARCH, 6, 18));
        }
    }
    // Docker's profile on an old kernel drops its minKernel rules.
    let d = Profile::load(Path::new(DOCKER_PROFILE)).unwrap();
    checked += assert_equivalent(
        &d,
        &CompileOptions::default(),
        &target(NATIVE_GO_ARCH, 4, 7),
    );
    assert!(checked > 10_000, "only {checked} inputs");
}

#[test]
fn single_program_matches_the_stack_for_synthetic_profiles() {
    for p in synthetic_profiles() {
        for opts in both_network_options() {
            assert_equivalent(&p, &opts, &target(NATIVE_GO_ARCH, 6, 18));
        }
    }
}
