//! The `upm audit ...` subcommands, embedded by the binary's CLI.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};

use super::query::{show, Filter};
use super::verify::verify;
use super::AuditError;
use crate::keys::keygen;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    /// The log's own lines, unchanged (pipe into jq).
    Jsonl,
    /// Aligned columns for people.
    Table,
}

fn parse_ts(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("not an RFC 3339 timestamp ({e}), e.g. 2026-11-22T04:40:00Z"))
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AuditCommand {
    /// Prove that no entry is missing, altered, inserted or reordered.
    /// Exit 0 intact (a torn last line left by a crash included), 1 broken, 2 unreadable.
    Verify {
        /// The log (default: the configured one); its rotated files are walked too.
        path: Option<PathBuf>,
        /// ed25519 public key (SPKI PEM) to check every checkpoint signature.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Print entries matching every given filter, oldest first.
    Show {
        path: Option<PathBuf>,
        #[arg(long)]
        request_id: Option<String>,
        /// upm's own id of one call (in its result's `data.call_id`).
        #[arg(long)]
        call_id: Option<String>,
        #[arg(long)]
        plugin: Option<String>,
        #[arg(long)]
        method: Option<String>,
        /// The result code word, e.g. ok, timeout, plugin_failed.
        #[arg(long)]
        outcome: Option<String>,
        /// Entries at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_ts)]
        since: Option<DateTime<FixedOffset>>,
        /// Entries strictly before this RFC 3339 time.
        #[arg(long, value_parser = parse_ts)]
        until: Option<DateTime<FixedOffset>>,
        #[arg(long, value_enum, default_value_t = ShowFormat::Jsonl)]
        format: ShowFormat,
    },
    /// Create an ed25519 key pair for checkpoint signing (PKCS#8 / SPKI PEM;
    /// the secret is created 0600). Never overwrites.
    Keygen { secret: PathBuf, public: PathBuf },
}

fn resolve(path: Option<PathBuf>, default_path: Option<&Path>) -> Option<PathBuf> {
    path.or_else(|| default_path.map(Path::to_path_buf))
}

const NO_PATH: &str = "upm audit: no log given and no audit log configured: pass PATH";

/// Prints one report line. A reader that went away (`upm audit verify | head -1`) ends
/// the output quietly and leaves the exit code alone; `println!` would panic.
fn say(mut out: impl Write, text: &str) {
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            let _ = writeln!(io::stderr(), "upm audit: cannot write the report: {e}");
        }
    }
}

/// Runs one subcommand; returns the process exit code.
pub fn run(cmd: AuditCommand, default_path: Option<&Path>) -> i32 {
    match cmd {
        AuditCommand::Verify { path, key } => {
            let Some(path) = resolve(path, default_path) else {
                say(io::stderr(), NO_PATH);
                return 2;
            };
            let report = verify(&path, key.as_deref());
            let code = report.exit_code();
            if code == 2 {
                say(io::stderr(), &report.to_string());
            } else {
                say(io::stdout(), &report.to_string());
            }
            code
        }
        AuditCommand::Show {
            path,
            request_id,
            call_id,
            plugin,
            method,
            outcome,
            since,
            until,
            format,
        } => {
            let Some(path) = resolve(path, default_path) else {
                say(io::stderr(), NO_PATH);
                return 2;
            };
            let filter = Filter {
                request_id,
                call_id,
                plugin,
                method,
                outcome,
                since,
                until,
            };
            let stdout = io::stdout();
            let mut out = stdout.lock();
            match show(&path, &filter, format, &mut out)
                .and_then(|_| out.flush().map_err(AuditError::Output))
            {
                Ok(_) => 0,
                // `upm audit show | head`: the reader has all it wanted.
                Err(AuditError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    say(io::stderr(), &format!("upm audit show: {e}"));
                    2
                }
            }
        }
        AuditCommand::Keygen { secret, public } => match keygen(&secret, &public) {
            Ok(()) => {
                say(
                    io::stdout(),
                    &format!(
                        "wrote {} (secret, 0600) and {}",
                        secret.display(),
                        public.display()
                    ),
                );
                0
            }
            Err(e) => {
                say(io::stderr(), &format!("upm audit keygen: {e}"));
                2
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: AuditCommand,
    }

    #[test]
    fn parses_the_documented_forms() {
        let c = Cli::try_parse_from(["audit", "verify", "x.log", "--key", "k.pub"]).unwrap();
        assert_eq!(
            c.cmd,
            AuditCommand::Verify {
                path: Some("x.log".into()),
                key: Some("k.pub".into())
            }
        );
        let c = Cli::try_parse_from([
            "audit",
            "show",
            "--request-id",
            "r",
            "--outcome",
            "ok",
            "--since",
            "2026-01-01T00:00:00Z",
            "--format",
            "table",
        ])
        .unwrap();
        let AuditCommand::Show {
            request_id,
            since,
            format,
            path,
            ..
        } = c.cmd
        else {
            panic!("not show");
        };
        assert_eq!(request_id.as_deref(), Some("r"));
        assert!(since.is_some() && path.is_none());
        assert_eq!(format, ShowFormat::Table);
        assert!(Cli::try_parse_from(["audit", "show", "--since", "yesterday"]).is_err());
        assert!(Cli::try_parse_from(["audit", "show", "--format", "xml"]).is_err());
    }

    #[test]
    fn missing_path_is_a_usage_error() {
        let code = run(
            AuditCommand::Verify {
                path: None,
                key: None,
            },
            None,
        );
        assert_eq!(code, 2);
    }
}
