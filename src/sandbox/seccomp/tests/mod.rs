//! The seccomp layer's unit tests, by kind: [`parsing`] (wire format, names, key
//! resolution), [`program`] (the plan and the emitted BPF, run on [`interpreter`]),
//! [`oracle`] (yesterday's stack of seccompiler filters) and [`equivalence`] (the single
//! program against that stack, on boundary and random inputs), [`kernel`] (filters
//! installed for real) and [`engine`] (the profile a container engine is handed).

mod engine;
mod equivalence;
mod interpreter;
mod kernel;
mod notify;
mod oracle;
mod parsing;
mod program;

use super::bpf::*;
use super::model::Cond;
use super::plan::{self, Block, Check, Plan};
use super::resolve::{self, KernelVersion, ResolvedRule, Target, NATIVE_GO_ARCH};
use super::rules::{own_rules, OWN_RULE_NAMES};
use super::*;
use equivalence::assert_equivalent;
use interpreter::{boundary_values, holds, run, run_stack, Data};
use seccompiler::{sock_filter, BpfProgram, SeccompCmpOp};
use std::collections::BTreeMap;
use std::path::Path;

const DEFAULT_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default.json");
const DOCKER_PROFILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/seccomp/docker-default.json"
);

fn parse(json: &str) -> Result<Profile, SeccompError> {
    Profile::from_json("t", json.as_bytes())
}

fn target(arch: &'static str, major: u32, minor: u32) -> Target {
    Target {
        arch,
        kernel: KernelVersion(major, minor, 0),
    }
}

fn nr(name: &str) -> i64 {
    syscalls::native_number(name).unwrap()
}

fn both_network_options() -> [CompileOptions; 2] {
    [
        CompileOptions::default(),
        CompileOptions {
            deny_sockets: true,
            allow_tcp: false,
        },
    ]
}

// ---- profiles that exercise every action, operator and precedence rule ----

const MIXED: &str = r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[
    {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
    {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
    {"names":["uname"],"action":"SCMP_ACT_TRAP"},
    {"names":["getpid"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
    {"names":["gettid"],"action":"SCMP_ACT_ERRNO","errnoRet":13}
]}"#;

/// Every action, two errnos in an order that matters, every operator, 64-bit values,
/// a syscall at each end of the table, and rules for upm's network syscalls.
const SYNTHETIC_DENY: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
    {"names":["read","write","close","exit_group"],"action":"SCMP_ACT_ALLOW"},
    {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":1,"value":4294967296,"op":"SCMP_CMP_LT"}]},
    {"names":["getpid"],"action":"SCMP_ACT_KILL","args":[{"index":0,"value":5,"op":"SCMP_CMP_GT"}]},
    {"names":["getpid"],"action":"SCMP_ACT_ALLOW","args":[{"index":2,"value":7,"op":"SCMP_CMP_NE"}]},
    {"names":["getpid","getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":22,"args":[{"index":0,"value":4294967301,"op":"SCMP_CMP_GE"}]},
    {"names":["getppid"],"action":"SCMP_ACT_TRAP","args":[{"index":3,"value":12884901888,"op":"SCMP_CMP_LE"},{"index":4,"value":0,"op":"SCMP_CMP_EQ"}]},
    {"names":["getppid"],"action":"SCMP_ACT_LOG","args":[{"index":5,"value":280375465083135,"valueTwo":188016488349714,"op":"SCMP_CMP_MASKED_EQ"}]},
    {"names":["getppid","uname"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":1,"value":18446744073709551615,"op":"SCMP_CMP_EQ"}]},
    {"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
    {"names":["uname"],"action":"SCMP_ACT_LOG","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
    {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":22,"args":[{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]},
    {"names":["socket"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":0,"value":10,"op":"SCMP_CMP_EQ"}]},
    {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":1,"op":"SCMP_CMP_EQ"}]},
    {"names":["io_uring_setup"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
    {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
    {"names":["seccomp"],"action":"SCMP_ACT_KILL"},
    {"names":["listns","mseal"],"action":"SCMP_ACT_TRAP","args":[{"index":2,"value":4294967295,"op":"SCMP_CMP_GE"}]},
    {"names":["getuid"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_LE"},{"index":1,"value":18446744073709551615,"op":"SCMP_CMP_LT"}]}
]}"#;

/// An allow-list turned inside out: default ALLOW, then KILL, TRAP, LOG and errnos.
const SYNTHETIC_ALLOW: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
    {"names":["mount","umount2"],"action":"SCMP_ACT_ERRNO"},
    {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"},
    {"names":["kill"],"action":"SCMP_ACT_KILL","args":[{"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
    {"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":3,"args":[{"index":0,"value":1,"op":"SCMP_CMP_LE"}]},
    {"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":9223372036854775808,"op":"SCMP_CMP_GE"}]},
    {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},
    {"names":["personality"],"action":"SCMP_ACT_LOG","args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_MASKED_EQ","valueTwo":8}]},
    {"names":["personality"],"action":"SCMP_ACT_TRAP","args":[{"index":0,"value":4294967296,"op":"SCMP_CMP_GT"}]},
    {"names":["socket"],"action":"SCMP_ACT_LOG"},
    {"names":["ioctl"],"action":"SCMP_ACT_ERRNO","errnoRet":25,"args":[{"index":1,"value":21505,"op":"SCMP_CMP_NE"},{"index":2,"value":0,"op":"SCMP_CMP_NE"}]},
    {"names":["ioctl"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":21505,"op":"SCMP_CMP_EQ"}]},
    {"names":["read"],"action":"SCMP_ACT_TRAP","args":[{"index":0,"value":1,"op":"SCMP_CMP_MASKED_EQ","valueTwo":1},{"index":2,"value":4294967296,"op":"SCMP_CMP_LE"}]}
]}"#;
