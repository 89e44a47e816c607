//! The two ways the sandbox suites run upm, and their shared probe helpers.

use serde_json::Value;

/// The uid/gid upm runs as in the `as_user` half of a suite (no passwd entry needed).
pub const USER: (u32, u32) = (4242, 4242);
/// What a root upm's plugins become.
pub const NOBODY: u32 = 65534;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// upm runs as root: plugins become 65534.
    Root,
    /// upm runs as uid 4242: plugins stay 4242 inside a user namespace.
    User,
}

impl Who {
    /// The uid and gid the plugin must have.
    pub fn plugin_ids(self) -> (u32, u32) {
        match self {
            Who::Root => (NOBODY, NOBODY),
            Who::User => USER,
        }
    }
}

/// Declares `name::as_root` and `name::as_user` for a `fn name(who: Who)`.
// Not every suite that includes tests/common declares tests both ways.
#[allow(unused_macros)]
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn as_root() {
                super::$name(super::Who::Root)
            }
            #[test]
            fn as_user() {
                super::$name(super::Who::User)
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use both;

/// A probe's errno for a refused attempt.
pub fn errno(v: &Value) -> i64 {
    v["errno"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an errno, got {v}"))
}
