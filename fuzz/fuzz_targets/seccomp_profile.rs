//! The OCI/Docker seccomp profile parser, and what follows a profile it accepts:
//! compiling it for this kernel (with and without upm's socket rules, and with an egress
//! allowlist's) and rewriting it
//! for a container engine. Each may refuse; none may panic, and a program that
//! compiles fits the kernel's limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use upm::sandbox::seccomp::{CompileOptions, Profile, SeccompError};

fuzz_target!(|data: &[u8]| {
    let Ok(profile) = Profile::from_json("fuzz", data) else {
        return;
    };
    // No socket rules, no sockets, and an egress allowlist's TCP-only rules.
    for (deny_sockets, allow_tcp) in [(false, false), (true, false), (true, true)] {
        match profile.compile(&CompileOptions {
            deny_sockets,
            allow_tcp,
        }) {
            Ok(filter) => {
                assert_eq!(filter.filter_count(), 1);
                assert!(filter.instruction_count() <= 4096);
            }
            Err(SeccompError::ProgramTooLarge { instructions, .. }) => {
                assert!(instructions > 4096)
            }
            Err(e) => panic!("a parsed profile failed to compile: {e}"),
        }
    }
    if let Ok(engine) = profile.engine_profile() {
        // The engine is handed a profile upm itself accepts.
        Profile::from_json("engine", &engine.bytes).expect("the engine's profile parses");
    }
});
