//! The BPF emitter: a [`Plan`] laid out as one classic-BPF program (ABI guard, binary
//! search over syscall numbers, per-syscall blocks), 64-bit argument comparisons as
//! libseccomp emits them, and trampolines for jumps out of 8-bit reach.

use seccompiler::{sock_filter, BpfProgram, SeccompCmpOp};

use super::model::{Action, Cond};
use super::plan::{Block, Plan};

pub(super) const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
pub(super) const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
pub(super) const BPF_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
pub(super) const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
pub(super) const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
pub(super) const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
pub(super) const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
pub(super) const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// The kernel refuses longer programs (BPF_MAXINSNS in linux/bpf_common.h).
pub(super) const BPF_MAXINSNS: usize = 4096;
/// Conditional jumps have 8-bit offsets; farther targets go through a JA.
pub(super) const MAX_JUMP: usize = u8::MAX as usize;
/// Offsets in `struct seccomp_data`.
pub(super) const SECCOMP_DATA_NR: u32 = 0;
pub(super) const SECCOMP_DATA_ARCH: u32 = 4;
pub(super) const SECCOMP_DATA_ARGS: u32 = 16;
#[cfg(target_arch = "x86_64")]
pub(super) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `AUDIT_ARCH_*` from linux/audit.h: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
#[cfg(target_arch = "x86_64")]
pub(super) const NATIVE_AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
pub(super) const NATIVE_AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// Lays the plan out as one program: ABI guard, binary search over the ranges, then
/// the blocks (single RETs first, next to the search, then the conditional ones).
pub(super) fn emit(plan: &Plan) -> BpfProgram {
    let mut blocks = plan.blocks.clone();
    let kill = blocks
        .iter()
        .position(|b| *b == Block::ret(Action::KillProcess))
        .unwrap_or_else(|| {
            blocks.push(Block::ret(Action::KillProcess));
            blocks.len() - 1
        });
    let mut e = Emitter::default();
    let mut labels = vec![0; blocks.len()];
    // Emitted backwards: the conditional blocks end up last.
    for (i, b) in blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.checks.is_empty())
    {
        labels[i] = e.block(b);
    }
    for (i, b) in blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| b.checks.is_empty())
    {
        labels[i] = e.ret(b.otherwise);
    }
    let root = e.search(&plan.ranges, &labels, labels[kill]);
    e.guard(root, labels[kill]);
    e.finish()
}

/// (high word, low word) offsets of argument `index`.
fn arg_offsets(index: u8) -> (u32, u32) {
    let base = SECCOMP_DATA_ARGS + 8 * u32::from(index);
    if cfg!(target_endian = "little") {
        (base + 4, base)
    } else {
        (base, base + 4)
    }
}

/// (high word, low word).
fn split(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// Where an emitted instruction sits: its index in `Emitter::rev`.
type Label = usize;

/// Builds a program backwards, so every jump target (always further on) already has a
/// place when the jump is emitted and far targets can get a trampoline on the spot.
#[derive(Default)]
struct Emitter {
    rev: Vec<sock_filter>,
}

impl Emitter {
    fn push(&mut self, insn: sock_filter) -> Label {
        self.rev.push(insn);
        self.rev.len() - 1
    }

    fn stmt(&mut self, code: u16, k: u32) -> Label {
        self.push(sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        })
    }

    fn ret(&mut self, action: Action) -> Label {
        self.stmt(BPF_RET_K, action.ret())
    }

    /// Instructions skipped by a jump placed at `from` that lands on `to`.
    fn distance(from: Label, to: Label) -> usize {
        from - to - 1
    }

    /// An unconditional jump, whose 32-bit offset reaches anywhere.
    fn ja(&mut self, to: Label) -> Label {
        let k = Emitter::distance(self.rev.len(), to);
        self.stmt(BPF_JA, u32::try_from(k).unwrap_or(u32::MAX))
    }

    /// A conditional jump; a target out of 8-bit reach goes through a JA placed right
    /// after the jump (each such JA pushes the jump one further from the other target).
    fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) -> Label {
        let (mut far_t, mut far_f) = (false, false);
        loop {
            let shared = far_t && far_f && jt == jf;
            let trampolines = usize::from(far_t) + usize::from(far_f && !shared);
            let at = self.rev.len() + trampolines;
            let t = far_t || Emitter::distance(at, jt) > MAX_JUMP;
            let f = far_f || Emitter::distance(at, jf) > MAX_JUMP;
            if (t, f) == (far_t, far_f) {
                break;
            }
            (far_t, far_f) = (t, f);
        }
        let jf = if far_f { self.ja(jf) } else { jf };
        let jt = match (far_t, far_f) {
            (true, true) if jt == jf => jf,
            (true, _) => self.ja(jt),
            _ => jt,
        };
        let at = self.rev.len();
        let offset = |to| u8::try_from(Emitter::distance(at, to)).unwrap_or(u8::MAX);
        let insn = sock_filter {
            code,
            jt: offset(jt),
            jf: offset(jf),
            k,
        };
        self.push(insn)
    }

    /// Loads a word of `seccomp_data`, then branches on it; returns the load.
    fn load_and_jump(&mut self, offset: u32, code: u16, k: u32, jt: Label, jf: Label) -> Label {
        self.jump(code, k, jt, jf);
        self.stmt(BPF_LD_W_ABS, offset)
    }

    /// Binary search over `ranges`: one JGE per split, landing on the blocks' labels.
    fn search(&mut self, ranges: &[(u32, usize)], labels: &[Label], empty: Label) -> Label {
        match ranges {
            [] => empty,
            [(_, block)] => labels[*block],
            _ => {
                let mid = ranges.len() / 2;
                let above = self.search(&ranges[mid..], labels, empty);
                let below = self.search(&ranges[..mid], labels, empty);
                self.jump(BPF_JGE_K, ranges[mid].0, above, below)
            }
        }
    }

    /// Kills a foreign `arch` and (x86_64) x32 numbers, then loads the syscall number.
    fn guard(&mut self, search: Label, kill: Label) -> Label {
        #[cfg(target_arch = "x86_64")]
        self.jump(BPF_JGE_K, X32_SYSCALL_BIT, kill, search);
        #[cfg(not(target_arch = "x86_64"))]
        if search + 1 != self.rev.len() {
            // The load below falls through; the search may start elsewhere.
            self.ja(search);
        }
        let nr = self.stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR);
        self.load_and_jump(SECCOMP_DATA_ARCH, BPF_JEQ_K, NATIVE_AUDIT_ARCH, nr, kill)
    }

    /// Checks in order, then `otherwise`; one RET per distinct action at the block's end.
    fn block(&mut self, block: &Block) -> Label {
        let mut rets = Vec::new();
        for check in &block.checks {
            self.shared_ret(&mut rets, check.action);
        }
        let mut next = self.shared_ret(&mut rets, block.otherwise);
        for check in block.checks.iter().rev() {
            let mut all = self.shared_ret(&mut rets, check.action);
            for cond in check.conds.iter().rev() {
                all = self.cond(cond, all, next);
            }
            next = all;
        }
        next
    }

    /// The block's RET for `action`, emitted on first use (only reached by jumps).
    fn shared_ret(&mut self, rets: &mut Vec<(Action, Label)>, action: Action) -> Label {
        if let Some((_, label)) = rets.iter().find(|(a, _)| *a == action) {
            return *label;
        }
        let label = self.ret(action);
        rets.push((action, label));
        label
    }

    /// One 64-bit comparison as libseccomp emits it: high word first, then low word.
    fn cond(&mut self, cond: &Cond, pass: Label, fail: Label) -> Label {
        let (hi_off, lo_off) = arg_offsets(cond.index);
        let (hi, lo) = split(cond.value);
        match cond.op {
            SeccompCmpOp::Eq => {
                let low = self.load_and_jump(lo_off, BPF_JEQ_K, lo, pass, fail);
                self.load_and_jump(hi_off, BPF_JEQ_K, hi, low, fail)
            }
            SeccompCmpOp::Ne => {
                let low = self.load_and_jump(lo_off, BPF_JEQ_K, lo, fail, pass);
                self.load_and_jump(hi_off, BPF_JEQ_K, hi, low, pass)
            }
            SeccompCmpOp::Gt | SeccompCmpOp::Ge => {
                let code = if cond.op == SeccompCmpOp::Gt {
                    BPF_JGT_K
                } else {
                    BPF_JGE_K
                };
                let low = self.load_and_jump(lo_off, code, lo, pass, fail);
                self.high_word(hi_off, hi, pass, low, fail)
            }
            SeccompCmpOp::Lt | SeccompCmpOp::Le => {
                // a < v is !(a >= v); a <= v is !(a > v).
                let code = if cond.op == SeccompCmpOp::Lt {
                    BPF_JGE_K
                } else {
                    BPF_JGT_K
                };
                let low = self.load_and_jump(lo_off, code, lo, fail, pass);
                self.high_word(hi_off, hi, fail, low, pass)
            }
            SeccompCmpOp::MaskedEq(mask) => {
                let (mask_hi, mask_lo) = split(mask);
                let low = self.masked_word(lo_off, mask_lo, lo, pass, fail);
                self.masked_word(hi_off, mask_hi, hi, low, fail)
            }
        }
    }

    /// Three-way branch on a high word against `v`.
    fn high_word(
        &mut self,
        offset: u32,
        v: u32,
        above: Label,
        equal: Label,
        below: Label,
    ) -> Label {
        if v == u32::MAX {
            // Nothing is above.
            return self.load_and_jump(offset, BPF_JEQ_K, v, equal, below);
        }
        // With v == 0, "not above" already means equal.
        let not_above = if v == 0 {
            equal
        } else {
            self.jump(BPF_JEQ_K, v, equal, below)
        };
        self.load_and_jump(offset, BPF_JGT_K, v, above, not_above)
    }

    /// `(word & mask) == v`, with the shortcuts the mask allows.
    fn masked_word(&mut self, offset: u32, mask: u32, v: u32, pass: Label, fail: Label) -> Label {
        if mask == 0 {
            return if v == 0 { pass } else { fail };
        }
        if v == 0 {
            return self.load_and_jump(offset, BPF_JSET_K, mask, fail, pass);
        }
        self.jump(BPF_JEQ_K, v, pass, fail);
        if mask != u32::MAX {
            self.stmt(BPF_AND_K, mask);
        }
        self.stmt(BPF_LD_W_ABS, offset)
    }

    fn finish(mut self) -> BpfProgram {
        self.rev.reverse();
        self.rev
    }
}

/// The same program with every ERRNO return turned into USER_NOTIF: upm's supervisor
/// then answers those calls, with the errno [`run`] finds in the original program for
/// the same `seccomp_data` (a notification does not carry the filter's return data).
/// Every other return, and every jump, is left as it is.
pub(super) fn notifying(program: &[sock_filter]) -> BpfProgram {
    program
        .iter()
        .map(|i| {
            let errno = i.code == BPF_RET_K
                && i.k & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_ERRNO;
            sock_filter {
                k: if errno {
                    libc::SECCOMP_RET_USER_NOTIF
                } else {
                    i.k
                },
                ..*i
            }
        })
        .collect()
}

/// Runs a program upm emitted on a `struct seccomp_data` (64 bytes, native layout), as
/// the kernel would. `None` for an opcode upm never emits, a load outside the data, or
/// running off the end (none of which the kernel would have accepted).
pub(super) fn run(program: &[sock_filter], data: &[u8; 64]) -> Option<u32> {
    let word = |offset: u32| -> Option<u32> {
        let o = usize::try_from(offset).ok()?;
        let bytes = data.get(o..o.checked_add(4)?)?;
        Some(u32::from_ne_bytes(bytes.try_into().ok()?))
    };
    let mut acc = 0u32;
    let mut pc = 0usize;
    // Jumps only go forward: at most one pass over the program.
    loop {
        let i = program.get(pc)?;
        pc += 1;
        match i.code {
            BPF_LD_W_ABS if offset_aligned(i.k) => acc = word(i.k)?,
            BPF_AND_K => acc &= i.k,
            BPF_RET_K => return Some(i.k),
            BPF_JA => pc = pc.checked_add(usize::try_from(i.k).ok()?)?,
            BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K | BPF_JSET_K => {
                let taken = match i.code {
                    BPF_JEQ_K => acc == i.k,
                    BPF_JGT_K => acc > i.k,
                    BPF_JGE_K => acc >= i.k,
                    _ => acc & i.k != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            _ => return None,
        }
    }
}

fn offset_aligned(k: u32) -> bool {
    k.is_multiple_of(4)
}
