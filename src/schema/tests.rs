use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::*;
use sha2::{Digest, Sha256};

/// Writes `files` (relative paths) into a fresh directory.
fn tree(files: &[(&str, Value)]) -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(dir.path(), files);
    dir
}

fn write_files(root: &Path, files: &[(&str, Value)]) {
    for (name, value) in files {
        let path = root.join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, serde_json::to_vec_pretty(value).expect("json")).expect("write");
    }
}

fn load_one(schema: Value) -> Result<MethodSchema, SchemaError> {
    let dir = tree(&[("s.json", schema)]);
    MethodSchema::load(&dir.path().join("s.json"))
}

fn schema(schema: Value) -> MethodSchema {
    load_one(schema).expect("schema loads")
}

fn violations(s: &MethodSchema, args: Value) -> Vec<Violation> {
    s.validate(&args)
        .expect_err("args must be rejected")
        .violations
}

fn hidden(v: Value) -> Value {
    json!({ "sha256": digest_hex(&v) })
}

#[test]
fn schemas_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MethodSchema>();
}

// ---- validation -------------------------------------------------------------------------

#[test]
fn accepts_valid_and_rejects_invalid_args() {
    let s = schema(json!({
        "type": "object",
        "properties": { "text": { "type": "string", "maxLength": 5 } },
        "required": ["text"],
        "additionalProperties": false
    }));
    assert!(s.validate(&json!({ "text": "hello" })).is_ok());
    assert!(s.validate(&json!({ "text": "too long" })).is_err());
    assert!(s.validate(&json!({})).is_err());
    assert!(s.validate(&json!({ "text": "a", "extra": 1 })).is_err());
    assert!(s.validate(&json!("not an object")).is_err());
}

#[test]
fn lists_every_violation_with_instance_and_schema_paths() {
    let s = schema(json!({
        "type": "object",
        "properties": {
            "count": { "type": "integer" },
            "tags": { "type": "array", "items": { "type": "string" } }
        },
        "required": ["name"]
    }));
    let mut found = violations(&s, json!({ "count": "x", "tags": ["ok", 3] }));
    found.sort_by(|a, b| a.instance_path.cmp(&b.instance_path));
    let paths: Vec<(&str, &str)> = found
        .iter()
        .map(|v| (v.instance_path.as_str(), v.schema_path.as_str()))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("", "/required"),
            ("/count", "/properties/count/type"),
            ("/tags/1", "/properties/tags/items/type"),
        ]
    );
    assert!(found.iter().all(|v| !v.message.is_empty()));
}

#[test]
fn violation_messages_never_quote_the_value() {
    let s = schema(json!({
        "properties": { "password": { "type": "string", "minLength": 12, "writeOnly": true } }
    }));
    let found = violations(&s, json!({ "password": "hunter2" }));
    assert_eq!(found.len(), 1);
    assert!(
        !found[0].message.contains("hunter2"),
        "{}",
        found[0].message
    );
}

#[test]
fn formats_are_asserted() {
    let s = schema(json!({
        "properties": {
            "mail": { "format": "email" },
            "when": { "format": "date-time" },
            "id": { "format": "uuid" }
        }
    }));
    let good = json!({
        "mail": "a@example.org",
        "when": "2024-05-01T12:00:00Z",
        "id": "0190a0b4-7c3e-7d1a-9b2f-3c4d5e6f7a8b"
    });
    assert!(s.validate(&good).is_ok());
    let bad = json!({ "mail": "nope", "when": "yesterday", "id": "1234" });
    let mut paths: Vec<String> = violations(&s, bad)
        .into_iter()
        .map(|v| v.instance_path)
        .collect();
    paths.sort();
    assert_eq!(paths, vec!["/id", "/mail", "/when"]);
}

#[test]
fn unknown_format_is_refused_at_load() {
    let err = load_one(json!({ "format": "emial" })).expect_err("typo in format");
    assert!(matches!(err, SchemaError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("emial"), "{err}");
}

#[test]
fn draft_07_is_honoured() {
    let tuple = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": [{ "type": "string" }, { "type": "integer" }],
        "additionalItems": false
    });
    let s = schema(tuple.clone());
    assert!(s.validate(&json!(["a", 1])).is_ok());
    assert!(s.validate(&json!(["a", "b"])).is_err());
    assert!(s.validate(&json!(["a", 1, 2])).is_err());

    // The same keywords are not a valid 2020-12 schema, the default draft.
    let mut as_2020 = tuple;
    as_2020.as_object_mut().expect("object").remove("$schema");
    let err = load_one(as_2020).expect_err("items must be a schema in 2020-12");
    assert!(
        matches!(
            err,
            SchemaError::Invalid {
                draft: "draft 2020-12",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn invalid_schema_is_an_error_naming_the_file() {
    let err = load_one(json!({ "type": 12 })).expect_err("type must be a string or array");
    match &err {
        SchemaError::Invalid { path, location, .. } => {
            assert!(path.ends_with("s.json"));
            assert_eq!(location, "/type");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("s.json"), "{err}");
}

#[test]
fn custom_meta_schema_is_refused() {
    let err = load_one(json!({ "$schema": "https://example.com/my-meta", "type": "object" }))
        .expect_err("custom meta-schemas would need fetching");
    assert!(matches!(err, SchemaError::UnsupportedDraft { .. }), "{err}");
}

#[test]
fn unreadable_inputs_are_clear_errors() {
    let dir = tree(&[]);
    fs::write(dir.path().join("bad.json"), "{ not json").expect("write");
    let err = MethodSchema::load(&dir.path().join("bad.json")).expect_err("bad json");
    assert!(matches!(err, SchemaError::Parse { .. }), "{err}");

    let err = MethodSchema::load(&dir.path().join("absent.json")).expect_err("absent");
    assert!(matches!(err, SchemaError::Read { .. }), "{err}");
    assert!(err.to_string().contains("absent.json"), "{err}");

    let err = MethodSchema::load(dir.path()).expect_err("a directory");
    assert!(matches!(err, SchemaError::NotAFile { .. }), "{err}");
}

// ---- references -------------------------------------------------------------------------

#[test]
fn refs_reach_sibling_and_subdirectory_files() {
    let dir = tree(&[
        (
            "method.json",
            json!({
                "type": "object",
                "properties": {
                    "name": { "$ref": "common.json#/$defs/name" },
                    "size": { "$ref": "types/size.json" }
                }
            }),
        ),
        (
            "common.json",
            json!({ "$defs": { "name": { "type": "string", "minLength": 1 } } }),
        ),
        // Relative to the referring file: back up to the sibling.
        (
            "types/size.json",
            json!({ "allOf": [{ "$ref": "../common.json#/$defs/positive" }] }),
        ),
    ]);
    write_files(
        dir.path(),
        &[(
            "common.json",
            json!({ "$defs": {
                "name": { "type": "string", "minLength": 1 },
                "positive": { "type": "integer", "minimum": 1 }
            } }),
        )],
    );
    let s = MethodSchema::load(&dir.path().join("method.json")).expect("loads");
    assert!(s.validate(&json!({ "name": "x", "size": 3 })).is_ok());
    let found = violations(&s, json!({ "name": "", "size": 0 }));
    assert_eq!(found.len(), 2, "{found:?}");

    let root = fs::canonicalize(dir.path()).expect("canonical");
    let mut files = s.files().to_vec();
    assert_eq!(files[0], root.join("method.json"), "root first");
    files.sort();
    assert_eq!(
        files,
        vec![
            root.join("common.json"),
            root.join("method.json"),
            root.join("types/size.json"),
        ]
    );
    assert_eq!(
        s.document()["properties"]["size"]["$ref"],
        "types/size.json"
    );

    let digests: Vec<(&Path, &str)> = s.file_digests().collect();
    assert_eq!(digests.len(), 3);
    for (path, digest) in digests {
        let bytes = fs::read(path).expect("read");
        assert_eq!(
            digest,
            hex::encode(Sha256::digest(&bytes)),
            "{}",
            path.display()
        );
    }
}

#[test]
fn refs_work_in_directories_needing_percent_encoding() {
    let dir = tree(&[
        // A reference is a URI: its space is percent-encoded, unlike the directory's.
        ("my dir%/m.json", json!({ "$ref": "other%20file.json" })),
        ("my dir%/other file.json", json!({ "type": "integer" })),
    ]);
    let s = MethodSchema::load(&dir.path().join("my dir%/m.json")).expect("loads");
    assert!(s.validate(&json!(1)).is_ok());
    assert!(s.validate(&json!("1")).is_err());
    assert_eq!(s.files().len(), 2);
}

#[test]
fn absolute_local_refs_are_allowed() {
    let lib = tree(&[("lib.json", json!({ "type": "boolean" }))]);
    let lib_path = fs::canonicalize(lib.path().join("lib.json")).expect("canonical");
    let as_uri = format!("file://{}", lib_path.display());
    let dir = tree(&[(
        "m.json",
        json!({ "properties": {
            "a": { "$ref": lib_path.display().to_string() },
            "b": { "$ref": as_uri }
        } }),
    )]);
    let s = MethodSchema::load(&dir.path().join("m.json")).expect("loads");
    assert!(s.validate(&json!({ "a": true, "b": false })).is_ok());
    assert_eq!(violations(&s, json!({ "a": 1, "b": 2 })).len(), 2);
    assert_eq!(s.files().len(), 2, "one file, referenced twice");
}

#[test]
fn network_and_other_non_file_refs_are_refused() {
    for reference in [
        "https://example.com/schema.json",
        "http://example.com/schema.json#/$defs/x",
        "urn:example:thing",
        "file://remote-host/etc/schema.json",
    ] {
        let err =
            load_one(json!({ "properties": { "a": { "$ref": reference } } })).expect_err(reference);
        assert!(
            matches!(err, SchemaError::NonLocalReference { .. }),
            "{reference}: {err}"
        );
        assert!(err.to_string().contains(reference), "{err}");
    }
}

#[test]
fn network_ref_in_a_referenced_file_is_refused_naming_that_file() {
    let dir = tree(&[
        ("m.json", json!({ "$ref": "inner.json" })),
        (
            "inner.json",
            json!({ "$ref": "https://example.com/x.json" }),
        ),
    ]);
    let err = MethodSchema::load(&dir.path().join("m.json")).expect_err("network ref");
    match &err {
        SchemaError::NonLocalReference { path, .. } => assert!(path.ends_with("inner.json")),
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn embedded_resources_with_remote_ids_need_no_network() {
    let s = schema(json!({
        "$id": "https://example.com/root.json",
        "$defs": { "n": { "$id": "num.json", "type": "number" } },
        "properties": { "x": { "$ref": "num.json" } }
    }));
    assert!(s.validate(&json!({ "x": 1 })).is_ok());
    assert!(s.validate(&json!({ "x": "1" })).is_err());
}

#[test]
fn refs_inside_data_keywords_are_not_references() {
    let s = schema(json!({ "const": { "$ref": "https://example.com/x" } }));
    assert!(s
        .validate(&json!({ "$ref": "https://example.com/x" }))
        .is_ok());
    assert_eq!(s.files().len(), 1);
}

#[test]
fn missing_ref_file_is_an_error_naming_it() {
    let dir = tree(&[("m.json", json!({ "$ref": "sub/missing.json" }))]);
    let err = MethodSchema::load(&dir.path().join("m.json")).expect_err("missing");
    match &err {
        SchemaError::ReferenceUnreadable {
            path,
            reference,
            target,
            ..
        } => {
            assert!(path.ends_with("m.json"));
            assert_eq!(reference, "sub/missing.json");
            assert!(target.ends_with("sub/missing.json"));
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("sub/missing.json"), "{err}");
}

#[test]
fn invalid_referenced_file_is_an_error_naming_it() {
    let dir = tree(&[
        ("m.json", json!({ "$ref": "bad.json" })),
        ("bad.json", json!({ "minLength": -1 })),
    ]);
    let err = MethodSchema::load(&dir.path().join("m.json")).expect_err("bad ref");
    match &err {
        SchemaError::Invalid { path, .. } => assert!(path.ends_with("bad.json")),
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn referenced_file_without_schema_keyword_uses_the_referrers_draft() {
    let dir = tree(&[
        (
            "m.json",
            json!({ "$schema": "http://json-schema.org/draft-07/schema#", "$ref": "t.json" }),
        ),
        // A draft-07 tuple: invalid under 2020-12, fine under the referrer's draft-07.
        ("t.json", json!({ "items": [{ "type": "string" }] })),
    ]);
    let s = MethodSchema::load(&dir.path().join("m.json")).expect("loads");
    assert!(s.validate(&json!(["a"])).is_ok());
    assert!(s.validate(&json!([1])).is_err());
}

// ---- redaction --------------------------------------------------------------------------

#[test]
fn schema_without_secrets_redacts_nothing() {
    let s = schema(json!({ "properties": { "a": { "type": "string" } } }));
    assert!(!s.has_secrets());
    let args = json!({ "a": "x", "b": [1, 2] });
    assert_eq!(s.redact(&args), args);
}

#[test]
fn redacts_write_only_and_secret_fields_nested_and_in_arrays() {
    let s = schema(json!({
        "type": "object",
        "properties": {
            "user": { "type": "string" },
            "password": { "type": "string", "writeOnly": true },
            "nested": {
                "properties": { "token": { "x-upm-secret": true }, "note": {} }
            },
            "keys": { "type": "array", "items": { "x-upm-secret": true } },
            "pair": { "prefixItems": [{}, { "writeOnly": true }] }
        }
    }));
    assert!(s.has_secrets());
    let args = json!({
        "user": "ann",
        "password": "hunter2",
        "nested": { "token": { "deep": [1, 2] }, "note": "hi" },
        "keys": ["k1", "k2"],
        "pair": ["public", "private"],
        "unknown": "kept"
    });
    assert_eq!(
        s.redact(&args),
        json!({
            "user": "ann",
            "password": hidden(json!("hunter2")),
            "nested": { "token": hidden(json!({ "deep": [1, 2] })), "note": "hi" },
            "keys": [hidden(json!("k1")), hidden(json!("k2"))],
            "pair": ["public", hidden(json!("private"))],
            "unknown": "kept"
        })
    );
}

#[test]
fn redacts_through_refs_to_files_and_defs() {
    let dir = tree(&[
        (
            "m.json",
            json!({
                "$defs": { "creds": { "properties": { "pin": { "$ref": "lib/secret.json" } } } },
                "properties": { "login": { "$ref": "#/$defs/creds" } }
            }),
        ),
        (
            "lib/secret.json",
            json!({ "type": "string", "writeOnly": true }),
        ),
    ]);
    let s = MethodSchema::load(&dir.path().join("m.json")).expect("loads");
    assert!(s.has_secrets());
    let args = json!({ "login": { "pin": "1234", "user": "bob" } });
    assert_eq!(
        s.redact(&args),
        json!({ "login": { "pin": hidden(json!("1234")), "user": "bob" } })
    );
}

#[test]
fn redacts_through_combinators_and_open_properties() {
    let s = schema(json!({
        "anyOf": [
            { "properties": { "a": { "writeOnly": true } } },
            { "properties": { "b": { "type": "string" } } }
        ],
        "properties": {
            "env": {
                "patternProperties": { "^SECRET_": { "x-upm-secret": true } },
                "additionalProperties": { "type": "string" }
            },
            "headers": { "additionalProperties": { "writeOnly": true } }
        }
    }));
    // `a` fails `anyOf`'s first branch's intent here, yet is still redacted.
    let args = json!({
        "a": 1,
        "b": "public",
        "env": { "SECRET_KEY": "s", "PATH": "/bin" },
        "headers": { "Authorization": "Bearer x" }
    });
    assert_eq!(
        s.redact(&args),
        json!({
            "a": hidden(json!(1)),
            "b": "public",
            "env": { "SECRET_KEY": hidden(json!("s")), "PATH": "/bin" },
            "headers": { "Authorization": hidden(json!("Bearer x")) }
        })
    );
}

#[test]
fn redaction_follows_recursive_schemas_and_stops_on_ref_cycles() {
    let s = schema(json!({
        "$defs": {
            "node": {
                "properties": {
                    "key": { "writeOnly": true },
                    "children": { "items": { "$ref": "#/$defs/node" } }
                }
            }
        },
        "$ref": "#/$defs/node"
    }));
    let args = json!({ "key": "k0", "children": [{ "key": "k1", "children": [{ "key": "k2" }] }] });
    assert_eq!(
        s.redact(&args),
        json!({ "key": hidden(json!("k0")), "children": [{
            "key": hidden(json!("k1")), "children": [{ "key": hidden(json!("k2")) }]
        }] })
    );

    // A pure `$ref` cycle never applies to anything, but must not hang the redactor.
    let dir = tree(&[(
        "c.json",
        json!({
            "$defs": { "a": { "$ref": "#/$defs/b" }, "b": { "$ref": "#/$defs/a" } },
            "properties": { "x": { "$ref": "#/$defs/a" }, "s": { "writeOnly": true } }
        }),
    )]);
    let index = index::Index::load(&dir.path().join("c.json")).expect("indexes");
    let patterns = HashMap::new();
    let redactor = redact::Redactor {
        index: &index,
        patterns: &patterns,
    };
    let out = redactor.redact_root(&json!({ "x": 1, "s": 2 }));
    assert_eq!(out, json!({ "x": 1, "s": hidden(json!(2)) }));
}

#[test]
fn unresolvable_ref_redacts_the_whole_value() {
    let dir = tree(&[(
        "c.json",
        json!({ "properties": { "s": { "writeOnly": true } } }),
    )]);
    let mut index = index::Index::load(&dir.path().join("c.json")).expect("indexes");
    // Simulate a reference the redactor cannot follow.
    index.docs[0].value["properties"]["x"] = json!({ "$ref": "#/$defs/nowhere" });
    let patterns = HashMap::new();
    let redactor = redact::Redactor {
        index: &index,
        patterns: &patterns,
    };
    let out = redactor.redact_root(&json!({ "x": 1, "y": 2 }));
    assert_eq!(out, json!({ "x": hidden(json!(1)), "y": 2 }));
}

#[test]
#[ignore = "timing: run with --release --ignored --nocapture"]
fn validation_speed_for_a_typical_1k_object() {
    let s = schema(json!({
        "type": "object",
        "properties": {
            "text": { "type": "string", "maxLength": 4096 },
            "mode": { "enum": ["upper", "lower", "title"] },
            "count": { "type": "integer", "minimum": 0, "maximum": 1000 },
            "mail": { "type": "string", "format": "email" },
            "tags": { "type": "array", "items": { "type": "string", "maxLength": 32 }, "maxItems": 20 },
            "opts": { "type": "object", "additionalProperties": { "type": "boolean" } }
        },
        "required": ["text", "mode"],
        "additionalProperties": false
    }));
    let args = json!({
        "text": "x".repeat(800),
        "mode": "upper",
        "count": 12,
        "mail": "someone@example.org",
        "tags": ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"],
        "opts": { "trim": true, "collapse": false, "strict": true }
    });
    assert!(canonical_json(&args).len() > 900);
    let n = 20_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(s.validate(std::hint::black_box(&args)).is_ok());
    }
    eprintln!("validate: {:?} per call", start.elapsed() / n);
}

#[test]
fn a_flood_of_violations_is_counted_but_not_kept() {
    let s = schema(json!({"type": "object", "properties": {
        "a": {"type": "array", "items": {"type": "string"}}
    }}));
    let long_key = "k".repeat(5000);
    let r = s
        .validate(&json!({ "a": vec![1; 5000] }))
        .expect_err("rejected");
    assert_eq!(r.total, 5000);
    assert_eq!(r.violations.len(), MAX_REPORTED);
    assert_eq!(r.violations[0].instance_path, "/a/0");
    let s = schema(json!({"type": "object", "additionalProperties": false}));
    let r = s
        .validate(&json!({ long_key.clone(): 1 }))
        .expect_err("rejected");
    assert_eq!(r.total, 1);
    for v in &r.violations {
        for field in [&v.instance_path, &v.schema_path, &v.message] {
            assert!(field.chars().count() <= 1025, "{} chars", field.len());
        }
    }
}

// ---- bundling ----------------------------------------------------------------------------

/// The bundle stands alone: compiled with no way to read a file, it accepts and rejects
/// exactly what the schema of many files does, and names no file.
fn assert_bundle_equivalent(s: &MethodSchema, samples: &[Value]) -> Value {
    let bundled = s.bundled().expect("bundles");
    let text = bundled.to_string();
    assert!(!text.contains("file:") && !text.contains(".json"), "{text}");
    struct NoFiles;
    impl jsonschema::Retrieve for NoFiles {
        fn retrieve(
            &self,
            uri: &jsonschema::Uri<String>,
        ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
            Err(format!("the bundle reached out to {uri}").into())
        }
    }
    let v = jsonschema::options()
        .with_retriever(NoFiles)
        .should_validate_formats(true)
        .build(&bundled)
        .unwrap_or_else(|e| panic!("the bundle compiles alone: {e}\n{bundled:#}"));
    for x in samples {
        assert_eq!(
            v.is_valid(x),
            s.validate(x).is_ok(),
            "{x} against {bundled:#}"
        );
    }
    bundled
}

#[test]
fn bundling_puts_every_referenced_file_under_defs_and_refs_become_pointers() {
    let dir = tree(&[
        (
            "method.json",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "name": { "$ref": "common.json#/$defs/name" },
                    "size": { "$ref": "types/size.json" },
                    "tag": { "$ref": "types/tag.json#short" },
                    "self": { "$ref": "method.json#/$defs/local" },
                    "local": { "$ref": "#/$defs/local" }
                },
                "$defs": { "local": { "type": "boolean" }, "common": { "const": 1 } }
            }),
        ),
        (
            "common.json",
            json!({ "$defs": {
            "name": { "type": "string", "minLength": 1 },
            "positive": { "type": "integer", "minimum": 1 }
        } }),
        ),
        (
            "types/size.json",
            json!({ "allOf": [{ "$ref": "../common.json#/$defs/positive" }] }),
        ),
        // Another file named like one already there, and an anchor.
        (
            "types/tag.json",
            json!({ "$id": "https://example.com/tag", "$defs": {
            "s": { "$anchor": "short", "type": "string", "maxLength": 3 } } }),
        ),
        ("types/common.json", json!({ "type": "null" })),
    ]);
    let s = MethodSchema::load(&dir.path().join("method.json")).expect("loads");
    let bundled = assert_bundle_equivalent(
        &s,
        &[
            json!({ "name": "x", "size": 3, "tag": "abc", "self": true, "local": false }),
            json!({ "name": "", "size": 0 }),
            json!({ "tag": "abcd" }),
            json!({ "self": 1 }),
            json!({ "local": "no" }),
            json!({ "size": "3" }),
        ],
    );
    let props = &bundled["properties"];
    assert_eq!(
        props["name"]["$ref"], "#/$defs/common_2/$defs/name",
        "{bundled:#}"
    );
    assert_eq!(props["size"]["$ref"], "#/$defs/size");
    assert_eq!(props["tag"]["$ref"], "#/$defs/tag/$defs/s");
    assert_eq!(props["self"]["$ref"], "#/$defs/local");
    assert_eq!(
        bundled["$defs"]["size"]["allOf"][0]["$ref"],
        "#/$defs/common_2/$defs/positive"
    );
    // The root's own defs are kept; anchors and nested ids are gone.
    assert_eq!(bundled["$defs"]["common"], json!({ "const": 1 }));
    assert!(bundled["$defs"]["tag"].get("$id").is_none());
    assert!(bundled["$defs"]["tag"]["$defs"]["s"]
        .get("$anchor")
        .is_none());
}

#[test]
fn bundling_a_single_file_changes_nothing_and_draft_7_uses_definitions() {
    let one = json!({ "type": "object", "properties": { "a": { "$ref": "#/$defs/a" } },
                      "$defs": { "a": { "type": "integer" } } });
    assert_eq!(schema(one.clone()).bundled().unwrap(), one);
    let dir = tree(&[
        (
            "m.json",
            json!({ "$schema": "http://json-schema.org/draft-07/schema#",
                           "properties": { "n": { "$ref": "n.json" } } }),
        ),
        (
            "n.json",
            json!({ "$schema": "http://json-schema.org/draft-07/schema#", "type": "number" }),
        ),
    ]);
    let s = MethodSchema::load(&dir.path().join("m.json")).unwrap();
    let b = assert_bundle_equivalent(&s, &[json!({ "n": 1 }), json!({ "n": "x" })]);
    assert_eq!(b["properties"]["n"]["$ref"], "#/definitions/n");
    assert_eq!(b["definitions"]["n"], json!({ "type": "number" }));
}

#[test]
fn bundling_follows_recursion_through_files() {
    let dir = tree(&[
        (
            "tree.json",
            json!({ "type": "object", "properties": {
            "children": { "type": "array", "items": { "$ref": "node.json" } } } }),
        ),
        (
            "node.json",
            json!({ "type": "object", "properties": {
            "value": { "type": "integer" },
            "children": { "type": "array", "items": { "$ref": "#" } },
            "root": { "$ref": "tree.json" } } }),
        ),
    ]);
    let s = MethodSchema::load(&dir.path().join("tree.json")).unwrap();
    let b = assert_bundle_equivalent(
        &s,
        &[
            json!({ "children": [{ "value": 1, "children": [{ "value": 2 }] }] }),
            json!({ "children": [{ "value": 1, "children": [{ "value": "x" }] }] }),
            json!({ "children": [{ "root": { "children": [{ "value": true }] } }] }),
        ],
    );
    assert_eq!(
        b["$defs"]["node"]["properties"]["children"]["items"]["$ref"],
        "#/$defs/node"
    );
    assert_eq!(b["$defs"]["node"]["properties"]["root"]["$ref"], "#");
}

#[test]
fn bundling_files_of_two_drafts_is_refused_naming_them() {
    let dir = tree(&[
        (
            "m.json",
            json!({ "properties": { "n": { "$ref": "n.json" } } }),
        ),
        (
            "n.json",
            json!({ "$schema": "http://json-schema.org/draft-07/schema#", "type": "number" }),
        ),
    ]);
    let s = MethodSchema::load(&dir.path().join("m.json")).unwrap();
    let e = s.bundled().unwrap_err().to_string();
    assert!(e.contains("n.json") && e.contains("draft-07"), "{e}");
}

#[test]
fn nesting_a_bundle_under_a_property_keeps_its_verdicts() {
    let dir = tree(&[
        (
            "list.json",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "array",
                "items": { "$ref": "item.json" },
                "maxItems": 3,
                "$defs": { "again": { "$ref": "#" } }
            }),
        ),
        (
            "item.json",
            json!({ "type": "object", "properties": {
                "n": { "type": "integer" },
                "more": { "$ref": "list.json" },
                "c": { "const": { "$ref": "#/not/a/ref" } } } }),
        ),
    ]);
    let s = MethodSchema::load(&dir.path().join("list.json")).unwrap();
    assert!(!s.is_object_schema());
    let nested = s.bundled_under("args").unwrap();
    assert_eq!(nested["type"], "object");
    assert_eq!(nested["required"], json!(["args"]));
    assert_eq!(
        nested["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(nested["properties"]["args"].get("$id").is_none());
    assert!(nested["properties"]["args"].get("$defs").is_none());
    // Into the moved definitions: unchanged; into the old root: under the property.
    assert_eq!(
        nested["properties"]["args"]["items"]["$ref"],
        "#/$defs/item"
    );
    assert_eq!(nested["$defs"]["again"]["$ref"], "#/properties/args");
    assert_eq!(
        nested["$defs"]["item"]["properties"]["more"]["$ref"],
        "#/properties/args"
    );
    // Data is not a reference.
    assert_eq!(
        nested["$defs"]["item"]["properties"]["c"]["const"]["$ref"],
        "#/not/a/ref"
    );
    let v = jsonschema::options()
        .should_validate_formats(true)
        .build(&nested)
        .unwrap_or_else(|e| panic!("compiles alone: {e}\n{nested:#}"));
    for x in [
        json!([]),
        json!([{ "n": 1 }, { "more": [{ "n": 2 }] }]),
        json!([{ "more": [{ "n": "x" }] }]),
        json!([1, 2, 3, 4]),
        json!({ "n": 1 }),
        json!(null),
    ] {
        assert_eq!(
            v.is_valid(&json!({ "args": x })),
            s.validate(&x).is_ok(),
            "{x} against {nested:#}"
        );
    }
    assert!(!v.is_valid(&json!({})), "the property is required");
    assert!(!v.is_valid(&json!({ "args": [], "other": 1 })), "and alone");

    // A root's $id would make the property a resource of its own: dropped.
    let one = schema(json!({ "$id": "https://example.com/s", "type": "string",
                             "$defs": { "s": { "$ref": "#" } } }));
    let nested = one.bundled_under("result").unwrap();
    assert!(nested["properties"]["result"].get("$id").is_none());
    assert_eq!(nested["$defs"]["s"]["$ref"], "#/properties/result");
}
