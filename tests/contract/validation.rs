//! Exit 10: args that do not match the method's schema.

use super::*;

#[test]
fn every_schema_violation_is_listed() {
    let d = setup();
    let p = sh(&d, "never", "echo '{}'");
    let c = cfg(
        &d,
        json!({"plugins": {"Strict": {
            "command": [p],
            "methods": { "go": { "schema": "schemas/strict.json" } }
        }}}),
    );
    let args = json!({"name": "far-too-long-secretish", "count": -1, "bogus": 1});
    let r = call(&c, "Strict", "go", args.clone());
    let data = err(&r, 10, "invalid_args");
    assert!(error_text(&r).contains("4 violations"), "{}", r.stdout);
    let v = data["details"]["violations"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = v
        .iter()
        .map(|x| {
            (
                x["instance_path"].as_str().expect("instance_path"),
                x["schema_path"].as_str().expect("schema_path"),
            )
        })
        .collect();
    for want in [
        ("/name", "/properties/name/maxLength"),
        ("/count", "/properties/count/minimum"),
        ("", "/required"),
        ("", "/additionalProperties"),
    ] {
        assert!(pairs.contains(&want), "missing {want:?} in {pairs:?}");
    }
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(
        !r.stdout.contains("far-too-long-secretish"),
        "violations never quote the value: {}",
        r.stdout
    );
    // Same through the argv form.
    let r2 = run_argv(&c, &["Strict", "go", &args.to_string()]);
    err(&r2, 10, "invalid_args");
    assert_eq!(r2.json["data"]["details"], r.json["data"]["details"]);
    // Nothing ran.
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "refused");
    assert_eq!(data["details"]["violation_count"], 4);
}

/// Half a million violations from a 1 MiB array are counted, not listed: listing them
/// all took ~1 GB of memory and a 60 MB response (four in a batch: 3.7 GB).
#[test]
fn a_flood_of_violations_is_counted_not_listed() {
    let d = setup();
    let p = sh(&d, "never", "echo '{}'");
    d.write(
        "schemas/strings.json",
        r#"{"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}}"#,
        false,
    );
    let c = cfg(
        &d,
        json!({"plugins": {"Arr": {
            "command": [p],
            "methods": { "go": { "schema": "schemas/strings.json" } }
        }}}),
    );
    let n = 500_000;
    let r = call(&c, "Arr", "go", json!({ "a": vec![1; n] }));
    let data = err(&r, 10, "invalid_args");
    assert_eq!(data["details"]["violation_count"], n);
    assert_eq!(data["details"]["violations"].as_array().unwrap().len(), 100);
    assert!(
        error_text(&r).contains("500000 violations; the first 100 are listed"),
        "{}",
        error_text(&r)
    );
    assert!(r.stdout.len() < 100_000, "{} bytes", r.stdout.len());
}
