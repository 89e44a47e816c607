//! OCI / Docker seccomp profiles, compiled to one BPF program before upm forks.
//!
//! A profile is the JSON users already have for Docker or Podman (`defaultAction`,
//! `syscalls[{names, action, errnoRet, args, includes, excludes}]`, ...). Anything this
//! module cannot enforce exactly as Docker + runc + libseccomp would is refused, never
//! skipped: unknown keys, actions, operators and syscall names are errors. The few places
//! where upm is deliberately *stricter* than Docker are listed under "Deviations".
//!
//! # Resolving Docker's keys (as moby's `setupSeccomp` does)
//! - `excludes.arches` / `includes.arches` are Go-style names (`amd64`, `arm64`) compared
//!   with the native architecture.
//! - `includes.caps`: upm runs plugins with an empty bounding set, so an entry that needs
//!   any capability is left out; `excludes.caps` therefore never excludes.
//! - `minKernel` is compared with the running kernel (major.minor[.patch]).
//! - `architectures` and `archMap` together are an error; both only say which ABIs are
//!   allowed, see "Deviations".
//! - A name unknown on the native arch but known on another (`chown32`, `_llseek`) is
//!   skipped, as libseccomp does; a name unknown on every arch is an error.
//!
//! # One filter, with the precedence a stack of filters would have
//! A profile mixes actions, and several of its rules (plus upm's own network rules) can
//! match one call. The answer is the one the kernel would give for a stack of filters, one
//! per action group (which is what upm installed before it compiled a single program):
//!
//! - the most restrictive matching action wins: KILL_PROCESS > KILL_THREAD > TRAP >
//!   ERRNO > LOG > ALLOW;
//! - between two ERRNO values, the one whose *group* comes later wins. Groups are the
//!   profile's distinct non-allow actions in order of first appearance (after resolving
//!   includes/excludes), then upm's network errnos (EAFNOSUPPORT, then ENOSYS);
//! - a call matching only ALLOW rules is allowed; a call matching no rule gets
//!   `defaultAction`.
//!
//! [`Profile::compile`] turns this into **one** classic-BPF program, so a call pays one
//! filter install and every syscall one short walk:
//!
//! 1. the ABI guard (below);
//! 2. a binary search over sorted ranges of syscall numbers (consecutive numbers with the
//!    same decision share a range, the default's gaps included): O(log n) JGEs;
//! 3. per-syscall blocks, shared between numbers with identical decisions. A number whose
//!    rules are unconditional is a single `RET`. Otherwise its block tries the rules'
//!    argument conditions in precedence order (the first that holds returns its action)
//!    and falls back to the best unconditional rule or `defaultAction`.
//!
//! Arguments are compared on 64 bits, unsigned, high word then low word, as libseccomp
//! does on 64-bit arches. Classic BPF's conditional jumps reach 255 instructions; farther
//! targets go through a JA with a 32-bit offset. A program above the kernel's 4096
//! instructions is refused. Since nothing is installed after this filter, a profile may
//! give `seccomp(2)` itself any action.
//!
//! # The ABI guard
//! The program's first instructions: a foreign `arch` (i386 via `int 0x80`) and, on
//! x86_64, any syscall number with the x32 bit (>= 0x4000_0000) kill the process, so a
//! deny-list profile cannot be bypassed through the x32 numbers of the same syscalls.
//!
//! # upm's own rules
//! Ranked after every profile group, they win over any profile ALLOW, LOG or ERRNO for
//! their calls, and over the profile's default; an explicit KILL/TRAP rule in the
//! profile still wins, being more restrictive.
//! - The network layer ([`CompileOptions::deny_sockets`]): `socket()` of every
//!   family, AF_UNIX included, answers EAFNOSUPPORT, and a datagram `socketpair()`
//!   ESOCKTNOSUPPORT (it could `sendto()` a pathname socket); stream pairs still work,
//!   and `bind()` answers EPERM (a pair's end needs no address; an abstract name would
//!   be common to the calls sharing a network namespace).
//!   With an egress allowlist ([`CompileOptions::allow_tcp`]) only TCP sockets over
//!   IPv4/IPv6 are created: another family answers EAFNOSUPPORT, another type
//!   ESOCKTNOSUPPORT, another protocol EPROTONOSUPPORT.
//! - Always: every SysV IPC call, `io_uring_setup`, `memfd_create` and `openat2` answer
//!   ENOSYS ([`SYSV_IPC`], [`ALWAYS_ENOSYS`]); a mode with the setuid or setgid bit
//!   answers EPERM in every call that sets one ([`MODE_SETTERS`]).
//!
//! So a profile whose default is KILL or TRAP gets ENOSYS, not its default, for those
//! calls when it does not name them: refused either way.
//!
//! A container engine does not run this program: [`Profile::engine_profile`] writes the
//! same decisions for those syscalls into the OCI profile it is handed, as entries whose
//! conditions never overlap between actions (libseccomp ranks overlapping rules its own way).
//!
//! # Deviations from Docker (all stricter or fail-closed)
//! - Only the native ABI runs: sub-architectures listed in `archMap`/`architectures`
//!   (x86, x32, arm) are killed by the ABI guard instead of being filtered by the rules.
//! - A rule's SCMP_ACT_ERRNO without `errnoRet` answers EPERM as the OCI runtime spec and
//!   runc say (`defaultErrnoRet` only applies to `defaultAction`).
//! - `errnoRet` on an action that takes none, `valueTwo` on an operator other than
//!   SCMP_CMP_MASKED_EQ, `flags`, `listenerPath`, SCMP_ACT_TRACE and SCMP_ACT_NOTIFY
//!   are refused. So is an entry comparing the same argument twice: runc silently turns
//!   such an entry into an OR of its conditions, which we will not guess.
//! - A SCMP_CMP_MASKED_EQ whose datum has bits outside its mask can never match in
//!   libseccomp; that entry is dropped (seccompiler would have masked the datum and matched).

//!
//! # Where things are
//! One file per step, as firecracker's seccompiler keeps types, compilation and
//! installation apart: `wire` parses the JSON into the `model`; `resolve` picks the
//! entries that apply for a kernel and arch; `rules` adds upm's own; `plan` decides
//! every syscall number; `bpf` emits the program and `install` installs it; `engine`
//! writes the profile a container engine gets; `syscalls` turns names into numbers;
//! `store` keeps a root upm's compiled programs between its processes.

mod bpf;
mod engine;
mod error;
mod install;
mod model;
pub mod notify;
mod plan;
mod resolve;
mod rules;
mod store;
mod syscalls;
#[cfg(test)]
mod tests;
mod wire;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

pub use engine::EngineProfile;
pub use error::SeccompError;
pub use install::CompiledFilter;
pub use model::Action;
pub use rules::{ALWAYS_ENOSYS, MODE_SETTERS, SYSV_IPC};

use model::Entry;
use plan::Plan;
use resolve::Target;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("upm's seccomp layer has syscall tables for x86_64 and aarch64 only");

pub use store::keep_under as keep_programs_under;

/// A profile: its bytes, parsed and validated (at once, or when first needed: see
/// [`Profile::deferred`]). Resolution against this machine's arch and kernel, and the
/// compilation to BPF, happen in [`Profile::compile`].
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// `sha256:<hex>` of the file bytes, for the audit log.
    pub digest: String,
    /// The exact bytes parsed (and digested): a container engine is handed these, never the path.
    pub bytes: Vec<u8>,
    parsed: OnceLock<Parsed>,
    /// Compiled filters, by `deny_sockets` and `allow_tcp`: a batch compiles each once.
    compiled: [OnceLock<Arc<CompiledFilter>>; 3],
}

/// What a profile says, as parsed and validated.
#[derive(Debug, Clone)]
struct Parsed {
    default_action: Action,
    entries: Vec<Entry>,
}

/// Options that upm layers on top of any profile.
#[derive(Debug, Default, Clone)]
pub struct CompileOptions {
    /// upm's "no network" layer: socket() of every family, AF_UNIX included, answers
    /// EAFNOSUPPORT, whatever the profile says (stream socketpairs still work). Landlock does
    /// not check connect() on a pathname socket, so an AF_UNIX socket could reach any
    /// host daemon listening on a world-writable one (a bus, a database, a logger).
    pub deny_sockets: bool,
    /// With `deny_sockets`, the egress allowlist's exception (issue 22): `socket()` of
    /// TCP over IPv4 or IPv6 (`AF_INET`/`AF_INET6`, `SOCK_STREAM` with any flags,
    /// protocol 0 or `IPPROTO_TCP`) is allowed, every other one refused as above. What
    /// such a socket may reach is the network namespace's and Landlock's business.
    pub allow_tcp: bool,
}

impl CompileOptions {
    /// Which cached filter these options compile to.
    fn slot(&self) -> usize {
        match (self.deny_sockets, self.allow_tcp) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        }
    }
}

impl Profile {
    /// Reads a profile file; its name is the file stem (`policies/default.json` → `default`).
    pub fn load(path: &Path) -> Result<Profile, SeccompError> {
        let p = Profile::load_deferred(path)?;
        p.parsed()?;
        Ok(p)
    }

    /// [`Profile::load`], parsed when first needed ([`Profile::deferred`]).
    pub fn load_deferred(path: &Path) -> Result<Profile, SeccompError> {
        let read_err = |source| SeccompError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes =
            crate::files::read_rules(path, wire::MAX_PROFILE_BYTES).map_err(|e| match e {
                crate::files::ReadError::Io(source) => read_err(source),
                crate::files::ReadError::NotAFile => SeccompError::NotAFile {
                    path: path.to_owned(),
                },
                crate::files::ReadError::TooLarge(_) => SeccompError::TooLarge {
                    path: path.to_owned(),
                },
                e @ crate::files::ReadError::Unsafe { .. } => SeccompError::Unsafe {
                    path: path.to_owned(),
                    why: e.to_string(),
                },
            })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(Profile::deferred(&name, &bytes))
    }

    /// Parses and validates a profile; nothing host-dependent is resolved yet.
    pub fn from_json(name: &str, bytes: &[u8]) -> Result<Profile, SeccompError> {
        let p = Profile::deferred(name, bytes);
        p.parsed()?;
        Ok(p)
    }

    /// A profile parsed when first needed: by a compilation whose program the store has
    /// not kept ([`Profile::compiled`]), or the engine's profile. Its errors come then.
    pub fn deferred(name: &str, bytes: &[u8]) -> Profile {
        Profile {
            name: name.to_owned(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
            bytes: bytes.to_vec(),
            parsed: OnceLock::new(),
            compiled: Default::default(),
        }
    }

    fn parsed(&self) -> Result<&Parsed, SeccompError> {
        if let Some(p) = self.parsed.get() {
            return Ok(p);
        }
        let (default_action, entries) = wire::parse(&self.name, &self.bytes)?;
        Ok(self.parsed.get_or_init(|| Parsed {
            default_action,
            entries,
        }))
    }

    /// Resolves the profile against this host and compiles it; call before forking.
    /// Like [`Profile::compile`], compiled once per profile and options, and a root
    /// upm's program kept between its processes (`store`): recalled, it is neither
    /// parsed nor compiled again.
    pub fn compiled(&self, opts: &CompileOptions) -> Result<Arc<CompiledFilter>, SeccompError> {
        let slot = &self.compiled[opts.slot()];
        if let Some(f) = slot.get() {
            return Ok(f.clone());
        }
        let target = Target::native()?;
        let f = match store::dir() {
            None => self.compile_for(opts, &target)?,
            Some(dir) => {
                let key = store::key(&self.digest, opts, &target);
                match store::recall(dir, &key) {
                    Some(program) => CompiledFilter::of(program),
                    None => {
                        let f = self.compile_for(opts, &target)?;
                        store::remember(dir, &key, &f.programs[0]);
                        f
                    }
                }
            }
        };
        let f = Arc::new(f);
        Ok(slot.get_or_init(|| f).clone())
    }

    pub fn compile(&self, opts: &CompileOptions) -> Result<CompiledFilter, SeccompError> {
        self.compile_for(opts, &Target::native()?)
    }

    fn compile_for(
        &self,
        opts: &CompileOptions,
        target: &Target,
    ) -> Result<CompiledFilter, SeccompError> {
        let program = bpf::emit(&Plan::new(self.parsed()?, opts, target));
        if program.len() > bpf::BPF_MAXINSNS {
            return Err(SeccompError::ProgramTooLarge {
                profile: self.name.clone(),
                instructions: program.len(),
            });
        }
        Ok(CompiledFilter::of(program))
    }

    /// The profile a container engine gets, with upm's rules (always without network).
    ///
    /// libseccomp (runc, crun) does not rank overlapping rules of one syscall the way
    /// upm does, so each such syscall's decision, as upm's own filter computes it
    /// (`Block::decide`), is written as entries whose argument conditions are
    /// *disjoint* between different actions: which rule a library prefers never matters.
    pub fn engine_profile(&self) -> Result<EngineProfile, SeccompError> {
        engine::build(self, &Target::native()?)
    }
}
