//! A classic-BPF interpreter, to run both compilers' output.

use super::*;

/// `struct seccomp_data` (the instruction pointer is 0).
#[derive(Debug, Clone, Copy)]
pub(super) struct Data {
    pub(super) nr: u32,
    pub(super) arch: u32,
    pub(super) args: [u64; 6],
}

impl Data {
    pub(super) fn native(nr: u32, args: [u64; 6]) -> Data {
        Data {
            nr,
            arch: NATIVE_AUDIT_ARCH,
            args,
        }
    }

    /// The 64 bytes of `struct seccomp_data`.
    pub(super) fn bytes(&self) -> [u8; 64] {
        let mut bytes = [0u8; 64];
        bytes[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        bytes
    }

    fn word(&self, offset: u32) -> u32 {
        let bytes = self.bytes();
        let o = offset as usize;
        assert!(
            o.is_multiple_of(4) && o + 4 <= 64,
            "load at bad offset {offset}"
        );
        u32::from_ne_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]])
    }
}

/// Runs `prog` as the kernel would; any opcode upm does not expect fails the test.
pub(super) fn run(prog: &[sock_filter], d: &Data) -> u32 {
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let Some(i) = prog.get(pc) else {
            panic!("ran off the end of a {}-instruction program", prog.len());
        };
        pc += 1;
        match i.code {
            BPF_LD_W_ABS => acc = d.word(i.k),
            BPF_AND_K => acc &= i.k,
            BPF_RET_K => return i.k,
            BPF_JA => pc += i.k as usize,
            BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K | BPF_JSET_K => {
                let taken = match i.code {
                    BPF_JEQ_K => acc == i.k,
                    BPF_JGT_K => acc > i.k,
                    BPF_JGE_K => acc >= i.k,
                    _ => acc & i.k != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            other => panic!("unexpected opcode {other:#x} at {}", pc - 1),
        }
    }
}

/// The kernel's rule for a stack: the lowest action (as i32) wins, and between equal
/// actions the most recently installed filter's return value.
pub(super) fn run_stack(programs: &[BpfProgram], d: &Data) -> u32 {
    let action = |r: u32| (r & 0xffff_0000) as i32;
    let mut best = libc::SECCOMP_RET_ALLOW;
    for p in programs {
        let r = run(p, d);
        if action(r) <= action(best) {
            best = r;
        }
    }
    best
}

/// What libseccomp's 64-bit comparison means, written independently of both compilers.
pub(super) fn holds(c: &Cond, x: u64) -> bool {
    match c.op {
        SeccompCmpOp::Eq => x == c.value,
        SeccompCmpOp::Ne => x != c.value,
        SeccompCmpOp::Lt => x < c.value,
        SeccompCmpOp::Le => x <= c.value,
        SeccompCmpOp::Gt => x > c.value,
        SeccompCmpOp::Ge => x >= c.value,
        SeccompCmpOp::MaskedEq(m) => x & m == c.value,
    }
}

/// Values on and around a condition's edges, in both words.
pub(super) fn boundary_values(c: &Cond) -> Vec<u64> {
    let v = c.value;
    let mut out = vec![
        v,
        v.wrapping_sub(1),
        v.wrapping_add(1),
        0,
        1,
        u64::MAX,
        u64::from(u32::MAX),
        1 << 32,
        v ^ (1 << 32),
        v ^ (1 << 63),
        v.wrapping_add(1 << 32),
        v.wrapping_sub(1 << 32),
        v & 0xffff_ffff,
        v | 0xffff_ffff_0000_0000,
        (v & 0xffff_ffff).wrapping_sub(1),
    ];
    if let SeccompCmpOp::MaskedEq(m) = c.op {
        let outside = !m;
        out.extend([
            m,
            outside,
            v | outside,
            v ^ (m & m.wrapping_neg()),
            v ^ (1u64 << (63 - m.leading_zeros().min(63))),
            v | (outside & outside.wrapping_neg()),
        ]);
    }
    out
}
