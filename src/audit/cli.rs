//! The `upm audit ...` subcommands, embedded by the binary's CLI.

use std::io::{self, Write};
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};

use super::files::log_set;
use super::format::printable;
use super::query::{show, unfinished_calls, Filter, ShowFormat};
use super::verify::verify_with_keys;
use super::AuditError;
use crate::keys::keygen;

fn parse_ts(s: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("not an RFC 3339 timestamp ({e}), e.g. 2026-11-22T04:40:00Z"))
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AuditCommand {
    /// Prove that no entry is missing, altered, inserted or reordered.
    /// Exit 0 intact (a torn last line left by a crash included), 1 broken, 2 unreadable.
    #[command(override_usage = "upm audit verify [PATH] [--key PUB]... [--config PATH]")]
    Verify {
        /// The log (default: the config's audit log, see --config); its rotated files are walked too.
        path: Option<PathBuf>,
        /// ed25519 public key (SPKI PEM) to check every checkpoint signature; repeat it
        /// for a log whose signing key was changed (each checkpoint must verify with one).
        #[arg(long, value_name = "PUB")]
        key: Vec<PathBuf>,
    },
    /// Print entries matching every given filter, oldest first (the files read are named on stderr).
    #[command(
        override_usage = "upm audit show [PATH] [--config PATH] [--request-id ID] [--call-id ID] [--plugin P] [--method M] [--outcome CODE] [--since T] [--until T] [--unfinished] [--format jsonl|table]"
    )]
    Show {
        /// The log (default: the config's audit log, see --config); its rotated files are read too.
        path: Option<PathBuf>,
        /// The caller's request_id (a batch may repeat one).
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// upm's own id of one call (in its result's `data.call_id`).
        #[arg(long, value_name = "ID")]
        call_id: Option<String>,
        /// The plugin, as the call named it.
        #[arg(long)]
        plugin: Option<String>,
        /// The method, as the call named it.
        #[arg(long)]
        method: Option<String>,
        /// The outcome as results say it: success, or an error code (timeout, plugin_failed, ...).
        #[arg(long, value_name = "CODE", value_parser = outcome_parser(), hide_possible_values = true)]
        outcome: Option<String>,
        /// Entries at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_ts)]
        since: Option<DateTime<FixedOffset>>,
        /// Entries strictly before this RFC 3339 time.
        #[arg(long, value_parser = parse_ts)]
        until: Option<DateTime<FixedOffset>>,
        /// Only the `started` entry of each call with no `finished` entry in the log set:
        /// upm was killed, or the call is still running.
        #[arg(long)]
        unfinished: bool,
        /// jsonl: the log's own lines (pipe into jq); table: aligned columns.
        #[arg(long, value_enum, default_value_t = ShowFormat::Jsonl)]
        format: ShowFormat,
    },
    /// Create an ed25519 key pair for checkpoint signing (PKCS#8 / SPKI PEM;
    /// the secret is created 0600). Never overwrites. The same as `upm keygen`, whose
    /// `--secret S --public P` it takes too.
    #[command(
        override_usage = "upm audit keygen --secret PATH --public PATH\n       upm audit keygen SECRET PUBLIC"
    )]
    Keygen {
        /// Where the secret key goes (created 0600; must not exist).
        #[arg(
            value_name = "SECRET",
            required_unless_present = "secret_opt",
            conflicts_with = "secret_opt"
        )]
        secret: Option<PathBuf>,
        /// Where the public key goes (must not exist).
        #[arg(
            value_name = "PUBLIC",
            required_unless_present = "public_opt",
            conflicts_with = "public_opt"
        )]
        public: Option<PathBuf>,
        /// Where the secret key goes, as `upm keygen` takes it.
        #[arg(long = "secret", id = "secret_opt", value_name = "PATH")]
        secret_opt: Option<PathBuf>,
        /// Where the public key goes, as `upm keygen` takes it.
        #[arg(long = "public", id = "public_opt", value_name = "PATH")]
        public_opt: Option<PathBuf>,
    },
}

/// The log the auditor's tools read when they are given none: the config's, and how it
/// was found (said with what they report); or why there is none to be found.
pub type DefaultLog = Result<(PathBuf, String), String>;

/// The log given, else the default one; `Err` is the sentence to fail with.
fn resolve(
    path: Option<PathBuf>,
    default: &DefaultLog,
) -> Result<(PathBuf, Option<String>), String> {
    match (path, default) {
        (Some(p), _) => Ok((p, None)),
        (None, Ok((p, how))) => Ok((p.clone(), Some(how.clone()))),
        (None, Err(why)) => Err(why.clone()),
    }
}

/// "<label>: a, b" for the files of a log set.
fn name_files(label: &str, files: &[PathBuf]) -> String {
    let names: Vec<String> = files
        .iter()
        .map(|f| printable(&f.display().to_string()))
        .collect();
    format!("{label}: {}", names.join(", "))
}

/// The words `--outcome` takes: `success` (logged as `ok`) and every error `code`.
fn outcome_words() -> Vec<&'static str> {
    let mut words = vec!["success", "ok"];
    words.extend(crate::error::Code::ALL.iter().map(|c| c.as_str()));
    words
}

fn outcome_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(outcome_words())
}

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
pub fn run(cmd: AuditCommand, default_log: &DefaultLog) -> i32 {
    match cmd {
        AuditCommand::Verify { path, key } => {
            let (path, how) = match resolve(path, default_log) {
                Ok(p) => p,
                Err(why) => {
                    say(io::stderr(), &format!("upm audit verify: {why}"));
                    return 2;
                }
            };
            let report = verify_with_keys(&path, &key);
            let code = report.exit_code();
            let mut text = report.to_string();
            if code != 2 {
                text.push_str(&unfinished_line(&path));
            }
            if !report.files.is_empty() {
                text.push('\n');
                text.push_str(&name_files("checked", &report.files));
            }
            if let Some(how) = how {
                text.push_str(&format!("\n({how})"));
            }
            if code == 2 {
                say(io::stderr(), &text);
            } else {
                say(io::stdout(), &text);
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
            unfinished,
            format,
        } => {
            let (path, how) = match resolve(path, default_log) {
                Ok(p) => p,
                Err(why) => {
                    say(io::stderr(), &format!("upm audit show: {why}"));
                    return 2;
                }
            };
            // The log says `ok` where results say `success`.
            let outcome = outcome.map(|o| if o == "success" { "ok".to_owned() } else { o });
            let filter = Filter {
                request_id,
                call_id,
                plugin,
                method,
                outcome,
                since,
                until,
                unfinished,
            };
            let stdout = io::stdout();
            let mut out = stdout.lock();
            match show(&path, &filter, format, &mut out)
                .and_then(|n| out.flush().map_err(AuditError::Output).map(|()| n))
            {
                Ok(shown) => {
                    let n = shown.matched;
                    let files = log_set(&path).unwrap_or_default();
                    let how = how.map(|h| format!(" ({h})")).unwrap_or_default();
                    let skipped = match shown.not_entries {
                        0 => String::new(),
                        k => format!(
                            "; skipped {k} line{} that {} not entries (lines UPM wrote before \
                             an adopted entry, a torn write, or worse: see upm audit verify)",
                            if k == 1 { "" } else { "s" },
                            if k == 1 { "is" } else { "are" },
                        ),
                    };
                    say(
                        io::stderr(),
                        &format!(
                            "upm audit show: {n} matching entr{}; {}{how}{skipped}",
                            if n == 1 { "y" } else { "ies" },
                            name_files("read", &files)
                        ),
                    );
                    0
                }
                // `upm audit show | head`: the reader has all it wanted.
                Err(AuditError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    say(io::stderr(), &format!("upm audit show: {e}"));
                    2
                }
            }
        }
        AuditCommand::Keygen {
            secret,
            public,
            secret_opt,
            public_opt,
        } => {
            let (Some(secret), Some(public)) = (secret.or(secret_opt), public.or(public_opt))
            else {
                // clap requires one of each form.
                say(io::stderr(), "upm audit keygen: give --secret S --public P");
                return 2;
            };
            match keygen(&secret, &public) {
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
            }
        }
    }
}

/// verify's line for the calls that started and did not finish (none: no line). A chain
/// proves that no line was removed, not that a call ended: after a SIGKILL its plugin
/// may or may not have run.
fn unfinished_line(path: &std::path::Path) -> String {
    match unfinished_calls(path) {
        Ok(calls) if calls.is_empty() => String::new(),
        Ok(calls) => format!(
            "\n{} call{} started and did not finish (upm was killed, its finished entry could \
             not be written, or {} still running): upm audit show --unfinished",
            calls.len(),
            if calls.len() == 1 { "" } else { "s" },
            if calls.len() == 1 {
                "it is"
            } else {
                "they are"
            },
        ),
        Err(e) => format!("\ncannot count the calls that did not finish: {e}"),
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
                key: vec!["k.pub".into()]
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
    fn no_log_to_be_found_is_an_error() {
        let code = run(
            AuditCommand::Verify {
                path: None,
                key: Vec::new(),
            },
            &Err("no config".into()),
        );
        assert_eq!(code, 2);
    }

    #[test]
    fn outcome_takes_the_words_results_use_and_nothing_else() {
        for word in ["success", "ok", "timeout", "config_error", "internal_error"] {
            assert!(
                Cli::try_parse_from(["audit", "show", "--outcome", word]).is_ok(),
                "{word}"
            );
        }
        let e = Cli::try_parse_from(["audit", "show", "--outcome", "sucess"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("plugin_failed") && e.contains("success"), "{e}");
    }

    #[test]
    fn keygen_takes_upm_keygens_options_or_two_paths() {
        let both = |c: AuditCommand| match c {
            AuditCommand::Keygen {
                secret,
                public,
                secret_opt,
                public_opt,
            } => (secret.or(secret_opt), public.or(public_opt)),
            _ => panic!("not keygen"),
        };
        let want = (Some(PathBuf::from("s")), Some(PathBuf::from("p")));
        let c = Cli::try_parse_from(["audit", "keygen", "--secret", "s", "--public", "p"]);
        assert_eq!(both(c.unwrap().cmd), want);
        let c = Cli::try_parse_from(["audit", "keygen", "s", "p"]);
        assert_eq!(both(c.unwrap().cmd), want);
        assert!(Cli::try_parse_from(["audit", "keygen", "s"]).is_err());
        assert!(Cli::try_parse_from(["audit", "keygen", "--secret", "s"]).is_err());
        assert!(Cli::try_parse_from(["audit", "keygen", "s", "--secret", "t", "p"]).is_err());
    }
}
