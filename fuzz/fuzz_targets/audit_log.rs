//! The audit-log reader behind `upm audit verify` and `upm audit show`, on a log file
//! built from the input. A line of random bytes never carries a valid SHA-256 chain,
//! so the input also says which lines to seal as the writer would, and the checker
//! gets past the first line: gaps, reordering, recovery entries, signed checkpoints.
//!
//! The input is split at newlines (a last piece without one stays a torn tail). A
//! piece starting with
//! - 0x01 is sealed as the next entry: the rest becomes its fields (verbatim);
//! - 0x02, 0xNN is sealed with its seq moved by NN - 128 (gaps, repeats);
//! - 0x03, 0xNN is a checkpoint signed with the harness's key, sign_every NN;
//! - 0x04, 0xNN is a recovery entry naming the raw lines just before it (NN odd:
//!   without their newline, as for a torn write);
//! - anything else is written as it is.

#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use upm::audit::{self, Filter, Outcome, ShowFormat, GENESIS};

struct Scratch {
    log: PathBuf,
    public: PathBuf,
    secret: SigningKey,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let dir = upm_fuzz::scratch_dir("audit");
        let (secret, public) = (dir.join("k.pem"), dir.join("k.pub"));
        audit::keygen(&secret, &public).expect("a key pair");
        Scratch {
            log: dir.join("audit.log"),
            secret: upm::keys::load_signing_key(&secret).expect("the secret key"),
            public,
        }
    })
}

/// Seals `fields` (the bytes between the braces) as the writer does.
fn seal(seq: u64, prev: &str, fields: &[u8]) -> (Vec<u8>, String) {
    let mut line = format!("{{\"seq\":{seq},\"prev\":\"{prev}\"").into_bytes();
    if !fields.is_empty() {
        line.push(b',');
        line.extend_from_slice(fields);
    }
    line.push(b'}');
    let hash = hex::encode(Sha256::digest(&line));
    line.pop();
    line.extend_from_slice(format!(",\"hash\":\"{hash}\"}}").as_bytes());
    (line, hash)
}

/// The log the input describes, and how many of its lines are sealed.
fn build(data: &[u8], key: &SigningKey) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let mut next_seq: u64 = 1;
    let mut prev = GENESIS.to_string();
    let mut raw: Vec<u8> = Vec::new();
    let mut sealed = 0;
    let pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let arg = piece.get(1).copied().unwrap_or(0);
        let fields: Option<(u64, Vec<u8>)> = match piece.first() {
            Some(1) => Some((next_seq, piece[1..].to_vec())),
            Some(2) => Some((
                next_seq.saturating_add_signed(i64::from(arg) - 128),
                piece.get(2..).unwrap_or_default().to_vec(),
            )),
            Some(3) => {
                let signed_seq = next_seq.saturating_sub(1);
                let message = format!("upm-audit-checkpoint:v1:{signed_seq}:{prev}:{arg}");
                let sig = hex::encode(key.sign(message.as_bytes()).to_bytes());
                let f = format!(
                    "\"event\":\"checkpoint\",\"signed_seq\":{signed_seq},\"signed_hash\":\"{prev}\",\"sign_every\":{arg},\"sig\":\"{sig}\""
                );
                Some((next_seq, f.into_bytes()))
            }
            Some(4) => {
                let n = raw.len() as u64 - u64::from(arg % 2);
                let torn = &raw[..usize::try_from(n).unwrap_or(0).min(raw.len())];
                let f = format!(
                    "\"event\":\"recovered\",\"torn_bytes\":{n},\"torn_sha256\":\"{}\"",
                    hex::encode(Sha256::digest(torn))
                );
                Some((next_seq, f.into_bytes()))
            }
            _ => None,
        };
        match fields {
            Some((seq, f)) => {
                let (line, hash) = seal(seq, &prev, &f);
                out.extend_from_slice(&line);
                prev = hash;
                next_seq = seq.saturating_add(1);
                sealed += 1;
                raw.clear();
            }
            None => {
                out.extend_from_slice(piece);
                raw.extend_from_slice(piece);
                raw.push(b'\n');
            }
        }
        if i < last {
            out.push(b'\n');
        }
    }
    (out, sealed)
}

fn lines(log: &[u8]) -> u64 {
    log.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let (log, sealed) = build(data, &s.secret);
    std::fs::write(&s.log, &log).expect("write the log");
    for key in [None, Some(s.public.as_path())] {
        let report = audit::verify(&s.log, key);
        // Every entry counted is one the harness sealed: nothing else has a valid chain.
        assert!(report.entries <= sealed, "{} > {sealed}", report.entries);
        assert!(
            !matches!(report.outcome, Outcome::Unreadable(_)),
            "{report}"
        );
        assert!((0..=1).contains(&report.exit_code()));
        let _ = report.to_string();
    }
    let since = chrono_like("2026-01-01T00:00:00Z");
    for filter in [
        Filter::default(),
        Filter {
            plugin: Some("p".into()),
            since,
            ..Filter::default()
        },
    ] {
        for format in [ShowFormat::Jsonl, ShowFormat::Table] {
            let mut out = Sink(0);
            let matched =
                audit::show(&s.log, &filter, format, &mut out).expect("show reads the log");
            assert!(matched <= lines(&log));
        }
    }
});

fn chrono_like(ts: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(ts).ok()
}

/// Counts what `show` prints.
struct Sink(usize);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
