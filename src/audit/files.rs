//! Names of rotated files: `<name>.YYYYMMDDTHHMMSSZ` or `<name>.YYYYMMDDTHHMMSSZ.N`;
//! which files make a log set; opening and reading them.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Opens a file of the log set for reading. Whoever can write the log's directory can
/// plant a name there: a symlink is not followed (it could name any file), and only a
/// regular file is read (a FIFO would block the reader for ever, in the writer while it
/// holds the log's lock; a device like `/dev/zero` never ends).
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(symlink_is_not_regular)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// What `open_regular` reports for anything but a regular file.
pub fn not_regular() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "not a regular file (a symlink, FIFO or device is not read as part of a log)",
    )
}

/// `O_NOFOLLOW` refuses a symlink with `ELOOP` ("too many levels of symbolic links"),
/// which would mislead whoever reads the message.
pub fn symlink_is_not_regular(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        not_regular()
    } else {
        e
    }
}

/// One line read by [`read_line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Ended by a newline (not kept in the buffer).
    Complete,
    /// Bytes at the end of the file without a newline.
    Partial,
    /// More than `max` bytes without a newline: not an entry. The rest of the line
    /// is still unread.
    TooLong,
    Eof,
}

/// Reads one line into `buf` (cleared first), holding at most `max` bytes before its
/// newline, so that a file without newlines cannot fill memory.
pub fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = r.by_ref().take(limit).read_until(b'\n', buf)?;
    Ok(if n == 0 {
        Line::Eof
    } else if buf.last() == Some(&b'\n') {
        buf.pop();
        Line::Complete
    } else if buf.len() > max {
        Line::TooLong
    } else {
        Line::Partial
    })
}

/// The sort key of a rotated file name, or `None` if `file_name` is not a
/// rotation of `base`.
pub fn rotation_key(base: &str, file_name: &str) -> Option<(String, u64)> {
    let rest = file_name.strip_prefix(base)?.strip_prefix('.')?;
    let (stamp, counter) = match rest.split_once('.') {
        Some((s, n)) => (s, n),
        None => (rest, ""),
    };
    let b = stamp.as_bytes();
    let shape_ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !shape_ok {
        return None;
    }
    let n = if counter.is_empty() {
        0
    } else if counter.bytes().all(|c| c.is_ascii_digit()) && !counter.starts_with('0') {
        counter.parse().ok()?
    } else {
        return None;
    };
    Some((stamp.to_string(), n))
}

/// Whether a file name is itself a rotated file (of any base name).
pub fn is_rotated_name(name: &str) -> bool {
    let by_stamp = name
        .rsplit_once('.')
        .is_some_and(|(b, _)| rotation_key(b, name).is_some());
    let parts: Vec<&str> = name.rsplitn(3, '.').collect();
    let by_counter = parts.len() == 3 && rotation_key(parts[2], name).is_some();
    by_stamp || by_counter
}

/// The rotated siblings of `path`, oldest first (by name: time, then counter).
pub fn rotated_siblings(path: &Path) -> io::Result<Vec<PathBuf>> {
    let (dir, base) = split(path)?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(key) = rotation_key(&base, name) {
            found.push((key, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The directory and file name of a log path.
pub fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let base = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "log path has no UTF-8 file name",
            )
        })?
        .to_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, base))
}

/// The name a file rotated at `stamp` gets: `counter` 0 means no suffix.
pub fn rotated_name(path: &Path, stamp: &str, counter: u64) -> io::Result<PathBuf> {
    let (dir, base) = split(path)?;
    Ok(if counter == 0 {
        dir.join(format!("{base}.{stamp}"))
    } else {
        dir.join(format!("{base}.{stamp}.{counter}"))
    })
}

/// The files of a log set, oldest first: rotated siblings, then `path`. A
/// rotated file given directly is checked alone.
pub fn log_set(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (_, base) = split(path)?;
    if is_rotated_name(&base) {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = rotated_siblings(path)?;
    if (path.exists() && !is_newest_rotated(path, &files)) || files.is_empty() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// The current file is the newest rotated one itself (a hard link): a rotation was
/// interrupted between linking it away and renaming its successor in (the writer's
/// next rotation drops the extra name). Read once, it is neither duplicated nor reordered.
fn is_newest_rotated(path: &Path, rotated: &[PathBuf]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| {
        std::fs::symlink_metadata(p)
            .map(|m| (m.dev(), m.ino()))
            .ok()
    };
    match (id(path), rotated.last()) {
        (Some(current), Some(newest)) => id(newest) == Some(current),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_names_are_recognised_and_sort() {
        let b = "entrypoint.log";
        assert_eq!(
            rotation_key(b, "entrypoint.log.20261122T044000Z"),
            Some(("20261122T044000Z".into(), 0))
        );
        assert_eq!(
            rotation_key(b, "entrypoint.log.20261122T044000Z.12"),
            Some(("20261122T044000Z".into(), 12))
        );
        for bad in [
            "entrypoint.log",
            "entrypoint.log.old",
            "entrypoint.log.20261122T044000",
            "entrypoint.log.20261122T044000Z.01",
            "entrypoint.log.20261122T044000Z.x",
            "entrypoint.logx.20261122T044000Z",
            ".entrypoint.log.rotate",
        ] {
            assert_eq!(rotation_key(b, bad), None, "{bad}");
        }
        let mut keys = [
            rotation_key(b, "entrypoint.log.20261122T044000Z.10").unwrap(),
            rotation_key(b, "entrypoint.log.20261122T044000Z.2").unwrap(),
            rotation_key(b, "entrypoint.log.20261122T044000Z").unwrap(),
            rotation_key(b, "entrypoint.log.20261121T235959Z").unwrap(),
        ];
        keys.sort();
        let counters: Vec<u64> = keys.iter().map(|k| k.1).collect();
        assert_eq!(counters, [0, 0, 2, 10]);
        assert_eq!(keys[0].0, "20261121T235959Z");
        assert!(is_rotated_name("entrypoint.log.20261122T044000Z"));
        assert!(is_rotated_name("a.b.20261122T044000Z.3"));
        assert!(!is_rotated_name("entrypoint.log"));
        assert!(!is_rotated_name("entrypoint.log.1"));
    }
}
