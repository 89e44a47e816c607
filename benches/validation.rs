//! Schema validation of a typical 1 KB args object (goal ≤ 20 µs): `cargo bench --bench validation`.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use std::path::Path;

fn typical_args() -> serde_json::Value {
    json!({
        "id": "0192f0c4-6c1e-7a3b-9b1a-2f6f1d2c3b4a",
        "title": "Quarterly report on the sandbox's performance",
        "author": { "name": "Ada Lovelace", "email": "ada@example.org" },
        "created": "2026-11-22T05:00:29.605Z",
        "tags": ["report", "q4", "sandbox", "performance", "audit"],
        "priority": 3,
        "body": "x".repeat(640),
        "options": { "language": "en", "dry_run": false, "token": "s3cr3t-t0k3n" }
    })
}

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/typical_schema.json");
    let schema = upm::schema::MethodSchema::load(&path).expect("schema loads");
    let args = typical_args();
    let size = serde_json::to_vec(&args).map(|v| v.len()).unwrap_or(0);
    assert!(schema.validate(&args).is_ok(), "the typical args are valid");
    let mut bad = args.clone();
    bad["priority"] = json!(99);
    bad["author"]["email"] = json!("not an email");
    c.bench_function(&format!("validate valid {size}-byte args"), |b| {
        b.iter(|| schema.validate(std::hint::black_box(&args)))
    });
    c.bench_function("validate invalid args (collect every violation)", |b| {
        b.iter(|| schema.validate(std::hint::black_box(&bad)))
    });
    c.bench_function("redact secrets for the audit log", |b| {
        b.iter(|| schema.redact(std::hint::black_box(&args)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
