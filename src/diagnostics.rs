//! Diagnostic logs: upm's own warnings and debugging output, never the audit log.
//!
//! `UPM_DIAG_LOG=/path/file` sends them to that file through tracing-appender
//! (written synchronously, so nothing is lost at exit), at the level in
//! `UPM_DIAG_LEVEL` (default `info`). Without it, warnings go to stderr:
//! stdout belongs to the one JSON result.

use std::path::Path;
use tracing_subscriber::filter::LevelFilter;

pub fn init() {
    let level = std::env::var("UPM_DIAG_LEVEL")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok());
    match std::env::var_os("UPM_DIAG_LOG").filter(|p| !p.is_empty()) {
        Some(path) => {
            let path = Path::new(&path);
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let Some(file) = path.file_name() else { return };
            let appender = tracing_appender::rolling::never(dir, file);
            let _ = tracing_subscriber::fmt()
                .with_writer(appender)
                .with_ansi(false)
                .with_max_level(level.unwrap_or(LevelFilter::INFO))
                .try_init();
        }
        None => {
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_max_level(level.unwrap_or(LevelFilter::WARN))
                .try_init();
        }
    }
}
