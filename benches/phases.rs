//! Where a call's compute time goes, phase by phase (medians in µs).
//! `cargo bench --bench phases` — run as root from the repository root, after `cargo build --release`.

use std::path::Path;
use std::time::Instant;

/// (first call in this process, median of the next `n`): a one-shot upm pays the first.
fn median_us(mut f: impl FnMut(), n: usize) -> (f64, f64) {
    let t = Instant::now();
    f();
    let cold = t.elapsed().as_secs_f64() * 1e6;
    for _ in 0..3 {
        f();
    }
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    (cold, v[n / 2])
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config_path = root.join("upm_config.json");
    let n = 200;
    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
    rows.push((
        "Config::load (example config)",
        median_us(
            || {
                upm::config::Config::load(&config_path).unwrap();
            },
            n,
        ),
    ));
    let schema = root.join("schemas/text.json");
    rows.push((
        "MethodSchema::load (text.json)",
        median_us(
            || {
                upm::schema::MethodSchema::load(&schema).unwrap();
            },
            n,
        ),
    ));
    // What checking every other schema of the example config costs a one-shot call,
    // once its own schema is loaded (the first time: what a one-shot upm pays).
    let others: Vec<_> = [
        "empty.json",
        "echo.json",
        "greeter_greet.json",
        "greeter_greet_later.json",
    ]
    .iter()
    .map(|f| root.join("schemas").join(f))
    .collect();
    rows.push((
        "MethodSchema::check (4 other schemas, 5 files)",
        median_us(
            || {
                for o in &others {
                    upm::schema::MethodSchema::check(o).unwrap();
                }
            },
            n,
        ),
    ));
    rows.push((
        "MethodSchema::load (the same, compiled)",
        median_us(
            || {
                for o in &others {
                    upm::schema::MethodSchema::load(o).unwrap();
                }
            },
            n,
        ),
    ));
    let s = upm::schema::MethodSchema::load(&schema).unwrap();
    let args = serde_json::json!({"text": "x".repeat(900)});
    rows.push((
        "MethodSchema::validate (1 KB args)",
        median_us(
            || {
                s.validate(&args).unwrap();
            },
            n * 10,
        ),
    ));
    let profile = root.join("policies/default.json");
    rows.push((
        "seccomp Profile::load (default.json)",
        median_us(
            || {
                upm::sandbox::seccomp::Profile::load(&profile).unwrap();
            },
            n,
        ),
    ));
    let p = upm::sandbox::seccomp::Profile::load(&profile).unwrap();
    rows.push((
        "seccomp compile to BPF",
        median_us(
            || {
                p.compile(&upm::sandbox::seccomp::CompileOptions {
                    deny_sockets: true,
                    allow_tcp: false,
                })
                .unwrap();
            },
            n,
        ),
    ));
    let host = upm::sandbox::host::Host::probe();
    rows.push((
        "Host::probe",
        median_us(
            || {
                upm::sandbox::host::Host::probe();
            },
            n,
        ),
    ));
    let exe = root.join("target/x86_64-unknown-linux-gnu/release/upm-texttools");
    if exe.exists() {
        rows.push((
            "open + sha256 of upm-texttools",
            median_us(
                || {
                    upm::integrity::open_executable(&exe, None).unwrap();
                },
                n,
            ),
        ));
    }
    let wd = std::env::temp_dir();
    let policy = upm::sandbox::policy::Policy::default();
    rows.push((
        "sandbox::prepare (all layers)",
        median_us(
            || {
                let paths = upm::sandbox::Paths {
                    workdir: &wd,
                    home_dirs: &[],
                    plugin_files: vec![exe.clone()],
                    seccomp: &p,
                    grants: &[],
                    verified: None,
                };
                upm::sandbox::prepare(&policy, &paths, &host).unwrap();
            },
            n,
        ),
    ));
    println!("| phase | first call µs (what one-shot upm pays) | median µs (warm, batch mode) |");
    println!("| --- | ---: | ---: |");
    for (name, (cold, warm)) in rows {
        println!("| {name} | {cold:.1} | {warm:.1} |");
    }
    println!("\ncommand: cargo bench --bench phases");
}
