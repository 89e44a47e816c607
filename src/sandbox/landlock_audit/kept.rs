//! The latest answer, kept between a root upm's processes in
//! `<workdir_root>/upm-audit-0/status` (0700 and 0600, root's own: see
//! [`crate::files::own_dir`]), so that one-shot calls in a row do not each ask: a
//! question costs the kernel a thread of its own, ~0.1 ms of CPU a call (issue 25).
//! Only root can write it; what it decides is whether the call's Landlock denials are
//! read and reported, never what the sandbox enforces.

use std::time::Duration;

const FORMAT: &str = "upm-audit-2";
static STORE: crate::files::KeptDir = crate::files::KeptDir::new("the audit's answers");

/// Where this process keeps answers: a root upm's (only root reads the audit),
/// under its config's `workdir_root` (the first call wins).
pub fn keep_under(workdir_root: &std::path::Path) {
    if nix::unistd::geteuid().is_root() {
        STORE.name(workdir_root.join("upm-audit-0"));
    }
}

/// The kept answer and how long ago it was asked, if that is less than
/// [`super::FRESH`] on this boot's clock (which no one sets: a wall clock set back
/// would make an old answer look fresh) and the entry is this boot's (a
/// `workdir_root` shared with another host, or kept across a reboot, is not).
pub(super) fn recall() -> Option<(bool, Duration)> {
    let bytes = crate::files::read_own_entry(&STORE.get()?.join("status"), 128)?;
    let (on, asked, boot) = parse(std::str::from_utf8(&bytes).ok()?)?;
    if boot != boot_id()? {
        return None;
    }
    let age = Duration::from_nanos(boottime_ns().checked_sub(asked)?);
    (age < super::FRESH).then_some((on, age))
}

/// When a question is asked, for [`keep`].
pub(super) fn now() -> u64 {
    boottime_ns()
}

/// Keeps `on`, asked at `asked` ([`now`]), over the entry in place: no temporary
/// file for an exit to leave behind (a one-shot upm does not wait for this thread),
/// and a reader that sees half of it fails its checksum. A failure only costs the
/// next process a question.
pub(super) fn keep(on: bool, asked: u64) {
    let Some(dir) = STORE.get() else { return };
    let Some(boot) = boot_id() else { return };
    if let Err(e) = write_in_place(&dir.join("status"), entry(on, asked, boot).as_bytes()) {
        tracing::debug!("the audit's answer was not kept: {e}");
    }
}

fn write_in_place(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let m = file.metadata()?;
    if !m.is_file() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o077 != 0 {
        return Err(std::io::Error::other("not upm's own entry: left as it is"));
    }
    file.write_all_at(bytes, 0)?;
    if m.len() > bytes.len() as u64 {
        file.set_len(bytes.len() as u64)?;
    }
    Ok(())
}

/// `CLOCK_BOOTTIME` in ns: this boot's, never set.
fn boottime_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer on our stack; CLOCK_BOOTTIME exists since Linux 2.6.39.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) };
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

fn boot_id() -> Option<&'static str> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        (!id.is_empty() && !id.contains(' ')).then(|| id.to_owned())
    })
    .as_deref()
}

/// FNV-1a (64 bits): tells a torn entry, not a forged one (only root can write it).
fn checksum(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn entry(on: bool, asked: u64, boot: &str) -> String {
    let text = format!("{FORMAT} {} {asked:020} {boot}", u8::from(on));
    format!("{text} {:016x}\n", checksum(&text))
}

fn parse(entry: &str) -> Option<(bool, u64, &str)> {
    let (text, sum) = entry.strip_suffix('\n')?.rsplit_once(' ')?;
    if u64::from_str_radix(sum, 16).ok()? != checksum(text) {
        return None;
    }
    let mut words = text.split(' ');
    let (format, on, asked, boot) = (words.next()?, words.next()?, words.next()?, words.next()?);
    if format != FORMAT || words.next().is_some() {
        return None;
    }
    let on = match on {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    Some((on, asked.parse().ok()?, boot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written_and_nothing_else_reads() {
        let boot = "9b3c1e52-0d6f-4a8e-b7a1-2f6c9d0e4b13";
        for on in [false, true] {
            let e = entry(on, 1_234_567_890_123, boot);
            assert_eq!(parse(&e), Some((on, 1_234_567_890_123, boot)), "{e}");
            // Torn or altered anywhere: the checksum says so.
            for cut in 1..e.len() {
                assert_eq!(parse(&e[..cut]), None, "{:?}", &e[..cut]);
            }
            let flipped = e.replacen(
                if on { " 1 " } else { " 0 " },
                if on { " 0 " } else { " 1 " },
                1,
            );
            assert_eq!(parse(&flipped), None, "{flipped}");
        }
        for bad in [
            "",
            "\n",
            "upm-audit-2 1 5 boot 0\n",
            "upm-audit-1 1 1765000000123456789\n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
