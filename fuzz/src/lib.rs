//! What the fuzz targets share.

use std::path::PathBuf;

/// A fresh directory for one fuzzing process's files, on tmpfs where there is one:
/// rewriting a file on ext4 flushes it at close (`auto_da_alloc`), which made the
/// targets that read a file wait on the disk at every input.
pub fn scratch_dir(what: &str) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("upm-fuzz-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}
