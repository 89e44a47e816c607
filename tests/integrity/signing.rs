//! Keys and signatures: keygen writes a whole key pair or nothing, sign writes only where it should.

use super::*;

#[test]
fn keygen_writes_a_key_pair_once_and_never_half_of_one() {
    let d = TestDir::new();
    std::fs::create_dir(d.join("keys")).unwrap();
    let secret = d.join("secret.pem");
    let public = d.join("keys/k.pub");
    let kg = |s: &Path, p: &Path| {
        upm(
            &[
                "keygen",
                "--secret",
                s.to_str().unwrap(),
                "--public",
                p.to_str().unwrap(),
            ],
            b"",
            &[],
        )
    };
    let run = kg(&secret, &public);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let s_text = std::fs::read_to_string(&secret).unwrap();
    let p_text = std::fs::read_to_string(&public).unwrap();
    assert!(s_text.contains("BEGIN PRIVATE KEY"), "{s_text}");
    assert!(p_text.contains("BEGIN PUBLIC KEY"), "{p_text}");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Never overwrites either file.
    let run = kg(&secret, &public);
    assert_ne!(run.code, 0, "{}", ctx(&run));
    let other = d.join("other.pem");
    let run = kg(&other, &public);
    assert_ne!(run.code, 0, "{}", ctx(&run));
    assert!(
        !other.exists(),
        "no half key pair when the public key exists"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), s_text);
    assert_eq!(std::fs::read_to_string(&public).unwrap(), p_text);

    // The public key's directory does not exist: no secret key is left behind.
    let s2 = d.join("s2.pem");
    let run = kg(&s2, &d.join("nope/k.pub"));
    assert_ne!(run.code, 0, "{}", ctx(&run));
    assert!(!s2.exists(), "half a key pair was left behind");
}

/// Two schema files whose names differ only in bytes that are not UTF-8 would share one
/// lossy label, so the signature would cover only one: such names are refused.
#[test]
fn signing_refuses_paths_that_are_not_utf8() {
    let s = signed_setup(None);
    let dir = s.d.join("schemas");
    s.d.write(
        "schemas/text.json",
        r#"{"allOf": [{"$ref": "a%FF.json"}, {"$ref": "a%FE.json"}]}"#,
        false,
    );
    for (byte, field) in [(0xff_u8, "x"), (0xfe, "y")] {
        let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&[
            b'a', byte, b'.', b'j', b's', b'o', b'n',
        ])
        .to_owned();
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(r#"{{"type": "object", "required": ["{field}"]}}"#),
        )
        .unwrap();
        chmod(&p, 0o644);
    }
    let secret = s.d.join("secret.pem");
    let run = upm(
        &[
            "sign",
            "--key",
            secret.to_str().unwrap(),
            "--config",
            s.cfg.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(run.code, 5, "{}", ctx(&run));
    assert!(run.stderr.contains("not a UTF-8 path"), "{}", ctx(&run));
    // The old signature does not cover the new files either: refused, with the reason.
    let run = s.wc(&s.strict_env());
    s.assert_untrusted(&run, "not a UTF-8 path");
}

/// `upm sign` never writes through a symlink planted at `<config>.sig`: it replaces
/// the link with the signature, and the link's target is left as it was.
#[test]
fn signing_replaces_a_planted_symlink_and_never_writes_through_it() {
    let s = signed_setup(None);
    let sig = trust_sig(&s.cfg);
    let victim = s.d.join("victim");
    std::fs::write(&victim, "important root data\n").unwrap();
    chmod(&victim, 0o600);
    std::fs::remove_file(&sig).unwrap();
    std::os::unix::fs::symlink(&victim, &sig).unwrap();
    sign(&s.cfg, &s.d.join("secret.pem"));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important root data\n"
    );
    let meta = std::fs::symlink_metadata(&sig).unwrap();
    assert!(meta.file_type().is_file(), "{meta:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    // No temporary file left behind, and the new signature verifies.
    let left: Vec<_> = std::fs::read_dir(&s.d.path)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let c = check(&s.cfg, &s.strict_env());
    assert_eq!(c.json["signature"]["status"], "verified", "{}", ctx(&c));
}
