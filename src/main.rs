//! upm's entry, without Rust's own (`lang_start`). That one reads `/proc/self/maps` for the
//! main thread's stack guard and gives upm and each of its threads a signal stack, only
//! to print a message when a stack overflows (which then ends upm with SIGSEGV instead):
//! about 0.08 ms of every one-shot call. What upm needs of it, `cli::main` does first:
//! SIGPIPE (and SIGXFSZ) ignored and descriptors 0–2 open.
// Not for `cargo test`'s harness of this file (no tests), which brings its own `main`.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // A panic must not unwind out of an `extern "C"` function (it would abort): it ends
    // upm with 101, as under Rust's own entry.
    std::process::exit(std::panic::catch_unwind(upm::cli::main).unwrap_or(101))
}
