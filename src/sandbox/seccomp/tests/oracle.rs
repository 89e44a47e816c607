//! The stack compiler upm used before the single program, kept as the oracle the new
//! program is checked against: ABI guard, one filter per action group, the network
//! filters, the default filter (yesterday's stack of seccompiler filters).

use super::*;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

#[cfg(target_arch = "x86_64")]
const NATIVE_TARGET: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const NATIVE_TARGET: TargetArch = TargetArch::aarch64;

fn to_seccompiler(action: Action) -> SeccompAction {
    match action {
        Action::Allow => SeccompAction::Allow,
        Action::Errno(e) => SeccompAction::Errno(e),
        Action::KillThread => SeccompAction::KillThread,
        Action::KillProcess => SeccompAction::KillProcess,
        Action::Trap => SeccompAction::Trap,
        Action::Log => SeccompAction::Log,
    }
}

/// One filter of the stack. Per syscall, `None` means "matches unconditionally",
/// otherwise the OR of the listed AND-ed condition sets.
#[derive(Debug, Clone)]
pub struct Stage {
    pub mismatch_action: Action,
    pub match_action: Action,
    pub rules: BTreeMap<i64, Option<Vec<Vec<Cond>>>>,
}

impl Stage {
    fn new(mismatch_action: Action, match_action: Action) -> Stage {
        Stage {
            mismatch_action,
            match_action,
            rules: BTreeMap::new(),
        }
    }

    fn add(&mut self, rule: &ResolvedRule) {
        let slot = self
            .rules
            .entry(rule.nr)
            .or_insert_with(|| Some(Vec::new()));
        match slot {
            None => {}
            Some(_) if rule.conds.is_empty() => *slot = None,
            Some(alternatives) if !alternatives.contains(&rule.conds) => {
                alternatives.push(rule.conds.clone());
            }
            Some(_) => {}
        }
    }
}

/// The filters after the ABI guard, in installation order.
pub fn plan(p: &Profile, opts: &CompileOptions, target: &Target) -> Vec<Stage> {
    let rules = resolve::rules(p.parsed().unwrap(), target);
    let mut groups: Vec<Stage> = Vec::new();
    for rule in rules.iter().filter(|r| r.action != Action::Allow) {
        match groups.iter_mut().find(|g| g.match_action == rule.action) {
            Some(group) => group.add(rule),
            None => {
                let mut group = Stage::new(Action::Allow, rule.action);
                group.add(rule);
                groups.push(group);
            }
        }
    }
    let mut default = Stage::new(p.parsed().unwrap().default_action, Action::Allow);
    for rule in &rules {
        default.add(rule);
    }
    // Each of upm's own rules as a filter of its own, installed after the profile's.
    for rule in own_rules(opts) {
        let mut stage = Stage::new(Action::Allow, rule.action);
        stage.add(&rule);
        groups.push(stage);
        default.add(&rule);
    }
    if p.parsed().unwrap().default_action != Action::Allow {
        groups.push(default);
    }
    groups
}

fn to_bpf(stage: Stage) -> BpfProgram {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, alternatives) in stage.rules {
        let chain = alternatives
            .unwrap_or_default()
            .into_iter()
            .map(|conds| {
                let conditions = conds
                    .into_iter()
                    .map(|c| {
                        SeccompCondition::new(c.index, SeccompCmpArgLen::Qword, c.op, c.value)
                            .unwrap()
                    })
                    .collect();
                SeccompRule::new(conditions).unwrap()
            })
            .collect();
        rules.insert(nr, chain);
    }
    let filter = SeccompFilter::new(
        rules,
        to_seccompiler(stage.mismatch_action),
        to_seccompiler(stage.match_action),
        NATIVE_TARGET,
    )
    .unwrap();
    BpfProgram::try_from(filter).unwrap()
}

fn insn(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Kills foreign ABIs: another `arch`, and x32 numbers on x86_64.
pub fn abi_guard() -> BpfProgram {
    let mut prog = vec![
        insn(BPF_LD_W_ABS, SECCOMP_DATA_ARCH, 0, 0),
        insn(BPF_JEQ_K, NATIVE_AUDIT_ARCH, 1, 0),
        insn(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
    ];
    #[cfg(target_arch = "x86_64")]
    prog.extend([
        insn(BPF_LD_W_ABS, SECCOMP_DATA_NR, 0, 0),
        insn(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        insn(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
    ]);
    prog.push(insn(BPF_RET_K, libc::SECCOMP_RET_ALLOW, 0, 0));
    prog
}

/// The whole stack, in installation order.
pub fn stack(p: &Profile, opts: &CompileOptions, target: &Target) -> Vec<BpfProgram> {
    let mut programs = vec![abi_guard()];
    programs.extend(plan(p, opts, target).into_iter().map(to_bpf));
    programs
}

// ---- the oracle itself ----

/// upm's own EPERM rules for mode bits: two per setter, four where the flags count.
fn mode_rules() -> usize {
    MODE_SETTERS
        .iter()
        .map(|(_, _, flags)| if flags.is_some() { 4 } else { 2 })
        .sum()
}

#[test]
fn oracle_stacking_order_and_contents() {
    let p = parse(MIXED).unwrap();
    let plan = oracle::plan(&p, &CompileOptions::default(), &target("amd64", 6, 18));
    let shape: Vec<_> = plan
        .iter()
        .map(|s| (s.mismatch_action, s.match_action))
        .collect();
    let enosys = Action::Errno(libc::ENOSYS as u32);
    let mut want = vec![
        (Action::Allow, Action::Errno(13)),
        (Action::Allow, Action::Trap),
    ];
    // upm's own rules, one filter each: SysV IPC, io_uring/memfd/openat2, then
    // the setuid and setgid bits of each mode-setting call
    want.extend([(Action::Allow, enosys); SYSV_IPC.len() + ALWAYS_ENOSYS.len()]);
    let eperm = Action::Errno(libc::EPERM as u32);
    want.extend(vec![(Action::Allow, eperm); mode_rules()]);
    want.push((Action::KillProcess, Action::Allow)); // default filter last
    assert_eq!(shape, want);
    let last = plan.len() - 1;
    let keys = |s: &oracle::Stage| s.rules.keys().copied().collect::<Vec<_>>();
    let mut errno_nrs = vec![nr("getppid"), nr("gettid")];
    errno_nrs.sort();
    assert_eq!(keys(&plan[0]), errno_nrs);
    assert_eq!(keys(&plan[1]), vec![nr("uname")]);
    assert_eq!(keys(&plan[2]), vec![libc::SYS_shmget]);
    assert_eq!(plan[last].rules[&nr("read")], None);
    assert_eq!(
        plan[last].rules[&nr("getpid")],
        Some(vec![vec![Cond {
            index: 0,
            op: SeccompCmpOp::Eq,
            value: 1
        }]])
    );
    let opts = CompileOptions {
        deny_sockets: true,
        allow_tcp: false,
    };
    let with_network: Vec<_> = oracle::plan(&p, &opts, &target("amd64", 6, 18))
        .iter()
        .map(|s| s.match_action)
        .collect();
    assert_eq!(
        with_network,
        [
            vec![
                Action::Errno(13),
                Action::Trap,
                Action::Errno(libc::EAFNOSUPPORT as u32),
                Action::Errno(libc::EPERM as u32), // bind
                Action::Errno(libc::ESOCKTNOSUPPORT as u32),
            ],
            vec![enosys; SYSV_IPC.len() + ALWAYS_ENOSYS.len()],
            vec![eperm; mode_rules()],
            vec![Action::Allow],
        ]
        .concat()
    );
}
