//! Signed configs: verified, refused (strict) or reported (warn), and signed files swapped during calls.

use super::*;

fn signed_ran(run: &Run) -> bool {
    run.code == 0 && run.result()["echo"] == "signed"
}

/// The trusted keys: whoever could add a file to their directory, or change a key's
/// file, could trust a key of their own; strict mode refuses such a directory or key.
#[test]
fn a_keys_directory_others_could_change_is_not_trusted() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let keys = s.d.join("keys");
    let key = keys.join("k.pub");
    for (path, mode) in [(&keys, 0o777), (&keys, 0o1777), (&key, 0o666)] {
        chmod(path, mode);
        s.assert_untrusted(&s.wc(&s.strict_env()), "others could change it");
        chmod(path, if path == &keys { 0o755 } else { 0o644 });
    }
    std::os::unix::fs::chown(&key, Some(4243), None).unwrap();
    s.assert_untrusted(&s.wc(&s.strict_env()), "others could change it");
    std::os::unix::fs::chown(&key, Some(0), None).unwrap();
    let run = s.wc(&s.strict_env());
    assert!(signed_ran(&run), "{}", ctx(&run));
}

#[test]
fn a_signed_config_runs_verified() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let run = s.wc(&s.strict_env());
    assert_ok(&run);
    assert!(signed_ran(&run), "{}", ctx(&run));
    let trust = &run.json["data"]["trust"];
    assert_eq!(trust["status"], "verified", "{}", ctx(&run));
    assert_eq!(trust["mode"], "strict", "{}", ctx(&run));
    assert!(trust["key_id"].as_str().is_some_and(|k| !k.is_empty()));
    // A pinned ELF: nothing it runs is left unvouched for.
    assert!(trust.get("unpinned").is_none(), "{}", ctx(&run));
    let lines = audit_of(&s.d, &run);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["trust"]["status"], "verified", "{l}");
    }
    // The signature names every file it covers.
    let sig: Value =
        serde_json::from_str(&std::fs::read_to_string(trust_sig(&s.cfg)).unwrap()).unwrap();
    let files = sig["files"].as_object().unwrap();
    for f in [
        "upm_config.json",
        "schemas/text.json",
        "schemas/defs/text.json",
        "policies/default.json",
        "bin/echo",
    ] {
        assert!(files.contains_key(f), "{f} not signed: {sig}");
    }
}

#[test]
fn tampering_with_any_signed_file_is_refused_in_strict_and_reported_in_warn() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let warn = [
        ("UPM_TRUSTED_KEYS_DIR", s.keys.as_str()),
        ("UPM_TRUST_MODE", "warn"),
    ];
    let targets = [
        ("upm_config.json", "upm_config.json changed"),
        ("schemas/text.json", "schemas/text.json changed"),
        ("schemas/defs/text.json", "schemas/defs/text.json changed"),
        ("policies/default.json", "policies/default.json changed"),
        ("bin/echo", "bin/echo changed"),
    ];
    for (rel, reason) in targets {
        let path = s.d.join(rel);
        let orig = std::fs::read(&path).unwrap();
        // Still valid, still the same meaning: only the bytes changed.
        let mut tampered = orig.clone();
        tampered.push(b'\n');
        std::fs::write(&path, &tampered).unwrap();

        let run = s.wc(&s.strict_env());
        s.assert_untrusted(&run, reason);

        let run = s.wc(&warn);
        let data = &run.json["data"];
        assert_eq!(data["trust"]["status"], "failed", "{rel}: {}", ctx(&run));
        assert_eq!(data["trust"]["mode"], "warn", "{rel}: {}", ctx(&run));
        assert!(
            data["trust"]["reason"].as_str().unwrap().contains(reason),
            "{rel}: {}",
            ctx(&run)
        );
        let warnings = data["warnings"].as_array().expect("warnings");
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap().contains(reason)),
            "{rel}: {}",
            ctx(&run)
        );
        if rel == "bin/echo" {
            // The pin is a separate layer: a changed pinned binary never runs.
            assert_eq!(run.code, 6, "{rel}: {}", ctx(&run));
            assert_eq!(run.code_word(), "integrity_mismatch");
        } else {
            assert_ok(&run);
            assert!(signed_ran(&run), "{rel}: {}", ctx(&run));
            let lines = audit_of(&s.d, &run);
            let events: Vec<_> = lines.iter().map(|l| l["event"].clone()).collect();
            assert_eq!(events, [json!("started"), json!("finished")], "{rel}");
            for l in &lines {
                assert_eq!(l["trust"]["status"], "failed", "{rel}: {l}");
                assert!(
                    l["warnings"][0].as_str().unwrap().contains(reason),
                    "{rel}: {l}"
                );
            }
        }
        let audited = audit_of(&s.d, &run);
        assert!(audited.iter().all(|l| l["trust"]["status"] == "failed"));

        std::fs::write(&path, &orig).unwrap();
        // Restored: verified again (the config's bytes are restored exactly).
        let run = s.wc(&s.strict_env());
        assert_ok(&run);
        assert_eq!(run.json["data"]["trust"]["status"], "verified");
    }
}

#[test]
fn unsigned_foreign_and_corrupted_signatures_are_refused() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let sig = trust_sig(&s.cfg);
    let good_sig = std::fs::read_to_string(&sig).unwrap();

    // Unsigned.
    std::fs::remove_file(&sig).unwrap();
    s.assert_untrusted(&s.wc(&s.strict_env()), "not signed");

    // Signed by a key that is not trusted.
    let other = s.d.join("other.pem");
    keygen(&other, &s.d.join("other.pub"));
    sign(&s.cfg, &other);
    s.assert_untrusted(&s.wc(&s.strict_env()), "not in the trusted keys directory");

    // A flipped signature digit, a changed key id, garbage.
    let doc: Value = serde_json::from_str(&good_sig).unwrap();
    let hexsig = doc["signature"].as_str().unwrap();
    let flipped = format!(
        "{}{}",
        if hexsig.starts_with('0') { "1" } else { "0" },
        &hexsig[1..]
    );
    let mut bad = doc.clone();
    bad["signature"] = json!(flipped);
    std::fs::write(&sig, bad.to_string()).unwrap();
    s.assert_untrusted(&s.wc(&s.strict_env()), "does not verify");
    // A signed digest edited to match a tampered file: the signature no longer verifies.
    let mut bad = doc.clone();
    bad["files"]["bin/echo"] = json!(format!("sha256:{}", "0".repeat(64)));
    std::fs::write(&sig, bad.to_string()).unwrap();
    s.assert_untrusted(&s.wc(&s.strict_env()), "does not verify");
    for garbage in [
        "",
        "{",
        "null",
        "{\"version\":1}",
        &good_sig[..good_sig.len() / 2],
    ] {
        std::fs::write(&sig, garbage).unwrap();
        s.assert_untrusted(&s.wc(&s.strict_env()), "cannot be used");
    }

    std::fs::write(&sig, &good_sig).unwrap();
    assert_ok(&s.wc(&s.strict_env()));
}

#[test]
fn trust_modes_keys_dirs_and_their_precedence() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);

    // Off: runs, no trust field, even unsigned.
    std::fs::rename(trust_sig(&s.cfg), s.d.join("saved.sig")).unwrap();
    let run = s.wc(&[("UPM_TRUST_MODE", "off"), ("UPM_TRUSTED_KEYS_DIR", &s.keys)]);
    assert_ok(&run);
    assert!(run.json["data"].get("trust").is_none(), "{}", ctx(&run));
    assert!(audit_of(&s.d, &run)
        .iter()
        .all(|l| l.get("trust").is_none()));
    // No settings at all: off.
    let run = s.wc(&[]);
    assert_ok(&run);
    assert!(run.json["data"].get("trust").is_none(), "{}", ctx(&run));
    std::fs::rename(s.d.join("saved.sig"), trust_sig(&s.cfg)).unwrap();

    // Strict without a usable keys dir fails, never open.
    let nowhere = s.d.join("nowhere").to_string_lossy().into_owned();
    s.assert_untrusted(
        &s.wc(&[("UPM_TRUSTED_KEYS_DIR", &nowhere)]),
        "cannot be used",
    );
    s.assert_untrusted(&s.wc(&[("UPM_TRUST_MODE", "strict")]), "no trusted key");
    s.d.write("keys/garbage.pub", "not a key\n", false);
    s.assert_untrusted(&s.wc(&s.strict_env()), "cannot be used");
    std::fs::remove_file(s.d.join("keys/garbage.pub")).unwrap();
    assert_ok(&s.wc(&s.strict_env()));

    // An invalid mode means strict, even with a good signature.
    for mode in ["permissive", "WARN", "Off "] {
        let run = s.wc(&[("UPM_TRUST_MODE", mode), ("UPM_TRUSTED_KEYS_DIR", &s.keys)]);
        s.assert_untrusted(&run, "unknown trust mode");
    }
}

#[test]
fn trust_settings_from_the_config_and_the_environment_winning() {
    if skip_unless_root() {
        return;
    }
    // keys_dir with no mode: strict.
    let s = signed_setup(Some(json!({ "keys_dir": "keys" })));
    let run = s.wc(&[]);
    assert_ok(&run);
    assert_eq!(run.json["data"]["trust"]["mode"], "strict");
    assert_eq!(run.json["data"]["trust"]["status"], "verified");
    let sig = trust_sig(&s.cfg);
    let good_sig = std::fs::read(&sig).unwrap();
    std::fs::remove_file(&sig).unwrap();
    s.assert_untrusted(&s.wc(&[]), "not signed");
    // The environment wins: warn runs the unsigned config, with a warning.
    let run = s.wc(&[("UPM_TRUST_MODE", "warn")]);
    assert_ok(&run);
    assert_eq!(run.json["data"]["trust"]["mode"], "warn");
    assert_eq!(run.json["data"]["trust"]["status"], "failed");
    assert!(!run.json["data"]["warnings"].as_array().unwrap().is_empty());
    // ... and so does the environment's keys dir.
    std::fs::write(&sig, &good_sig).unwrap();
    let empty = s.d.join("empty-keys");
    std::fs::create_dir(&empty).unwrap();
    s.assert_untrusted(
        &s.wc(&[("UPM_TRUSTED_KEYS_DIR", empty.to_str().unwrap())]),
        "not in the trusted keys directory",
    );

    // Config says strict; the environment says warn: warn.
    let s = signed_setup(Some(json!({ "mode": "strict", "keys_dir": "keys" })));
    std::fs::remove_file(trust_sig(&s.cfg)).unwrap();
    s.assert_untrusted(&s.wc(&[]), "not signed");
    let run = s.wc(&[("UPM_TRUST_MODE", "warn")]);
    assert_ok(&run);
    assert_eq!(run.json["data"]["trust"]["mode"], "warn");

    // A trust block that cannot be read means strict.
    let s = signed_setup(Some(json!({ "mode": "off", "keyz_dir": "keys" })));
    let run = s.wc(&[]);
    s.assert_untrusted(&run, "trust settings cannot be read");
}

/// Once the environment sets UPM_TRUST_MODE or UPM_TRUSTED_KEYS_DIR, the config's own
/// `trust` block (which whoever edits the config controls) is ignored entirely.
#[test]
fn the_config_trust_block_is_ignored_once_the_environment_sets_trust() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    // The attacker rewrites the config: another command, trust off, their own keys.
    let attacker_keys = s.d.join("attacker-keys");
    std::fs::create_dir(&attacker_keys).unwrap();
    let attacker = s.d.join("attacker.pem");
    keygen(&attacker, &attacker_keys.join("a.pub"));
    let evil = sh_printing(&s.d, "bin/evil.sh", r#"{"evil":true}"#);
    for block in [
        json!({ "mode": "off" }),
        json!({ "mode": "warn" }),
        json!({ "keys_dir": "attacker-keys" }),
        json!({ "mode": "off", "keys_dir": "attacker-keys" }),
    ] {
        s.d.config(&json!({
            "require_schemas": false,
            "trust": block,
            "plugins": { "T": { "command": [evil], "allowed_methods": ["wordcount"] } }
        }));
        sign(&s.cfg, &attacker);
        // The operator set only the keys directory: strict.
        s.assert_untrusted(&s.wc(&s.strict_env()), "not in the trusted keys directory");
        // The operator set only the mode: no keys from the config, fail closed.
        let run = s.wc(&[("UPM_TRUST_MODE", "strict")]);
        s.assert_untrusted(&run, "no trusted key");
        assert!(
            run.json["data"]["error"]
                .as_str()
                .unwrap()
                .contains("but not UPM_TRUSTED_KEYS_DIR"),
            "{}",
            ctx(&run)
        );
        // A mode that is not UTF-8 is unknown, so strict, whatever the config says.
        let mut cmd = Command::new(upm_bin());
        cmd.args(["run", "--config", s.cfg.to_str().unwrap()])
            .env_remove("UPM_TRUSTED_KEYS_DIR")
            .env_remove("UPM_LOG_FILE")
            .env(
                "UPM_TRUST_MODE",
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"str\xffict"),
            );
        let run = run_command(cmd, &request("T", "wordcount", json!({"text": "a b"})));
        s.assert_untrusted(&run, "unknown trust mode");
    }
}

/// A signature covers the config, which holds the pins: an executable without a pin is
/// covered by nothing, and "verified" must not hide it. The verdict lists it.
#[test]
fn a_verified_verdict_lists_what_ran_unpinned() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let script = sh_printing(&s.d, "bin/tool.sh", r#"{"who":"unpinned"}"#);
    let pinned = sh_printing(&s.d, "bin/pinned.sh", r#"{"who":"pinned"}"#);
    s.d.config(&json!({
        "require_schemas": false,
        "plugins": {
            "U": { "command": [script], "allowed_methods": ["go"] },
            "P": { "command": [pinned], "sha256": sha256_of(&pinned), "allowed_methods": ["go"] }
        }
    }));
    sign(&s.cfg, &s.d.join("secret.pem"));
    let run = call(&s.cfg, "U", "go", json!({}), &s.strict_env());
    assert_ok(&run);
    let trust = &run.json["data"]["trust"];
    assert_eq!(trust["status"], "verified", "{}", ctx(&run));
    assert_eq!(
        trust["unpinned"],
        json!([script.to_str().unwrap(), "/bin/sh"]),
        "{}",
        ctx(&run)
    );
    for l in audit_of(&s.d, &run) {
        assert_eq!(l["trust"]["unpinned"], trust["unpinned"], "{l}");
    }
    // A pinned script: only its interpreter, which nothing pins.
    let run = call(&s.cfg, "P", "go", json!({}), &s.strict_env());
    assert_ok(&run);
    assert_eq!(
        run.json["data"]["trust"]["unpinned"],
        json!(["/bin/sh"]),
        "{}",
        ctx(&run)
    );
    // `upm check` tells before any call.
    let c = check(&s.cfg, &s.strict_env());
    assert_eq!(c.code, 0, "{}", ctx(&c));
    assert_eq!(
        c.json["plugins"]["U"]["pins"]["unpinned"],
        json!([script.to_str().unwrap(), "/bin/sh"]),
        "{}",
        ctx(&c)
    );
}

/// A signed config and its signature put back after the operator signed a newer one
/// still verify (the key signed them); UPM_TRUST_MIN_SIGNED_AT refuses them.
#[test]
fn a_minimum_signing_time_refuses_a_rolled_back_config() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let sig = trust_sig(&s.cfg);
    let (old_cfg, old_sig) = (std::fs::read(&s.cfg).unwrap(), std::fs::read(&sig).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(20));
    // The operator tightens the config and signs again.
    let mut c: Value = serde_json::from_slice(&old_cfg).unwrap();
    c["sandbox"]["limits"]["timeout_ms"] = json!(5000);
    s.d.config(&c);
    sign(&s.cfg, &s.d.join("secret.pem"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&sig).unwrap()).unwrap();
    let signed_at = doc["signed_at"].as_str().unwrap().to_owned();
    let env = [
        ("UPM_TRUSTED_KEYS_DIR", s.keys.as_str()),
        ("UPM_TRUST_MIN_SIGNED_AT", signed_at.as_str()),
    ];
    assert_ok(&s.wc(&env));
    // Without the setting, the old pair verifies: a signature does not say it is the newest.
    std::fs::write(&s.cfg, &old_cfg).unwrap();
    std::fs::write(&sig, &old_sig).unwrap();
    assert_ok(&s.wc(&s.strict_env()));
    s.assert_untrusted(&s.wc(&env), "before UPM_TRUST_MIN_SIGNED_AT");
    // A minimum that is not a time: strict, refused.
    let env = [
        ("UPM_TRUSTED_KEYS_DIR", s.keys.as_str()),
        ("UPM_TRUST_MIN_SIGNED_AT", "yesterday"),
    ];
    s.assert_untrusted(&s.wc(&env), "not an RFC 3339 time");
    // On its own it is the environment speaking: strict, keys from the environment only.
    s.assert_untrusted(
        &s.wc(&[("UPM_TRUST_MIN_SIGNED_AT", "2000-01-01T00:00:00Z")]),
        "no trusted key",
    );
}

#[test]
fn check_reports_the_signature() {
    let s = signed_setup(None);
    let c = check(&s.cfg, &s.strict_env());
    assert_eq!(c.code, 0, "{}", ctx(&c));
    assert_eq!(c.json["signature"]["status"], "verified", "{}", ctx(&c));
    assert_eq!(c.json["signature"]["mode"], "strict");
    let pins = &c.json["plugins"]["T"]["pins"]["exec"];
    assert_eq!(pins["ok"], true, "{pins}");
    assert_eq!(pins["pinned"], sha256_of(&s.tt).as_str());
    assert_eq!(pins["sha256"], sha256_of(&s.tt).as_str());

    let c = check(&s.cfg, &[]);
    assert_eq!(c.json["signature"]["mode"], "off", "{}", ctx(&c));

    let schema = s.d.join("schemas/defs/text.json");
    let orig = std::fs::read(&schema).unwrap();
    std::fs::write(&schema, [orig.as_slice(), b" "].concat()).unwrap();
    let c = check(&s.cfg, &s.strict_env());
    assert_eq!(c.code, 5, "{}", ctx(&c));
    assert_eq!(c.json["signature"]["status"], "failed", "{}", ctx(&c));
    assert!(c.json["signature"]["reason"]
        .as_str()
        .unwrap()
        .contains("schemas/defs/text.json changed"));
    assert!(c.json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p.as_str().unwrap().starts_with("signature:")));
    // Warn: reported, not a problem.
    let c = check(
        &s.cfg,
        &[
            ("UPM_TRUST_MODE", "warn"),
            ("UPM_TRUSTED_KEYS_DIR", &s.keys),
        ],
    );
    assert_eq!(c.code, 0, "{}", ctx(&c));
    assert_eq!(c.json["signature"]["status"], "failed");
    assert_eq!(c.json["signature"]["mode"], "warn");
}

/// A Python class plugin's interpreter is listed by the signature; with trust on, what
/// runs is a copy of it hashed while copied, and a changed interpreter is refused.
#[test]
fn the_python_interpreter_is_signed_and_a_changed_one_never_runs() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    d.write("py/mod.py", GOOD_PY, false);
    let python = d.join("interp/python3");
    std::fs::create_dir_all(python.parent().unwrap()).unwrap();
    chmod(python.parent().unwrap(), 0o755);
    std::fs::copy(std::fs::canonicalize("/usr/bin/python3").unwrap(), &python).unwrap();
    chmod(&python, 0o755);
    let cfg = d.config(&json!({
        "require_schemas": false,
        "python": "interp/python3",
        "plugins": { "P": py_plugin("py") }
    }));
    std::fs::create_dir(d.join("keys")).unwrap();
    let secret = d.join("secret.pem");
    keygen(&secret, &d.join("keys/k.pub"));
    sign(&cfg, &secret);
    let sig: Value =
        serde_json::from_str(&std::fs::read_to_string(trust_sig(&cfg)).unwrap()).unwrap();
    assert_eq!(
        sig["files"]["interp/python3"],
        format!("sha256:{}", sha256_of(&python)).as_str(),
        "{sig}"
    );
    let keys = d.join("keys");
    let strict = [("UPM_TRUSTED_KEYS_DIR", keys.to_str().unwrap())];
    let run = call(&cfg, "P", "who", json!({}), &strict);
    assert_ok(&run);
    assert_eq!(run.result()["who"], "good", "{}", ctx(&run));
    assert_eq!(
        run.json["data"]["trust"]["status"],
        "verified",
        "{}",
        ctx(&run)
    );
    let started = &audit_of(&d, &run)[0];
    // The interpreter runs from a sealed memfd holding the signed bytes.
    assert_eq!(
        started["plugin_files"]["exec"], "memfd:python3",
        "{started}"
    );
    assert_eq!(
        started["plugin_files"]["exec_sha256"],
        sha256_of(&python).as_str()
    );

    // Another interpreter in its place: refused before anything runs, in strict.
    let saved = d.join("saved-python");
    std::fs::rename(&python, &saved).unwrap();
    d.write("interp/python3", "#!/bin/sh\necho '{\"evil\":1}'\n", true);
    let run = call(&cfg, "P", "who", json!({}), &strict);
    assert_refused(&d, &run, 5, "untrusted_config");
    let err = run.json["data"]["error"].as_str().unwrap();
    assert!(err.contains("interp/python3 changed"), "{}", ctx(&run));
    assert_eq!(
        run.json["data"]["trust"]["status"],
        "failed",
        "{}",
        ctx(&run)
    );
    // `upm check` says so too.
    let c = check(&cfg, &strict);
    assert_eq!(c.code, 5, "{}", ctx(&c));
    std::fs::rename(&saved, &python).unwrap();
    assert_ok(&call(&cfg, "P", "who", json!({}), &strict));
}

/// A signed file swapped in a loop between its signed content and another one:
/// whatever a call uses must be what was verified.
fn race_signed_file(
    what: &str,
    rel: &str,
    evil: &str,
    args: Value,
    classify: impl Fn(&Run, &str) -> Outcome + Sync,
) {
    let s = signed_setup(None);
    let target = s.d.join(rel);
    let good_text = std::fs::read_to_string(&target).unwrap();
    let good_digest = format!("sha256:{}", sha256_of(&target));
    let good = s.d.write("stash/good", &good_text, false);
    let evil = s.d.write("stash/evil", evil, false);
    static ONE_RACE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_RACE.lock().unwrap_or_else(|e| e.into_inner());
    let swapper = Swapper::start(target, good, evil, s.d.join("stash/.tmp"));
    let n = 150;
    let counts = [0, 1, 2].map(|_| AtomicUsize::new(0));
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let run = call(&s.cfg, "T", "wordcount", args.clone(), &s.strict_env());
                    match classify(&run, &good_digest) {
                        Outcome::Verified => counts[0].fetch_add(1, Ordering::Relaxed),
                        Outcome::Refused => counts[1].fetch_add(1, Ordering::Relaxed),
                        Outcome::Unverified => {
                            counts[2].fetch_add(1, Ordering::Relaxed);
                            eprintln!("{what}: used an unsigned file: {}", ctx(&run));
                            0
                        }
                    };
                }
            });
        }
    });
    let swaps = swapper.stop();
    let [ok, refused, bad] = counts.map(AtomicUsize::into_inner);
    println!("{what}: {n} calls during {swaps} swaps: {ok} used the signed file, {refused} refused, {bad} used the unsigned one");
    assert_eq!(
        bad, 0,
        "{what}: {bad} calls used a file that was not signed"
    );
    assert!(refused > 0, "{what}: the race was not exercised");
}

enum Outcome {
    /// Ran (or was refused by the schema) with the signed file.
    Verified,
    /// `untrusted_config`.
    Refused,
    /// Used a file the signature does not cover.
    Unverified,
}

#[test]
fn swapping_a_signed_schema_never_validates_with_the_unsigned_one() {
    if skip_unless_root() {
        return;
    }
    // Signed: text at most 1000 characters. Swapped in: no limit.
    race_signed_file(
        "signed schema",
        "schemas/defs/text.json",
        r#"{ "type": "string" }"#,
        json!({"text": "x".repeat(2000)}),
        |run, _| match (run.code, run.code_word()) {
            (10, "invalid_args") => Outcome::Verified,
            (5, "untrusted_config") => Outcome::Refused,
            _ => Outcome::Unverified,
        },
    );
}

#[test]
fn swapping_a_signed_seccomp_profile_never_enforces_the_unsigned_one() {
    if skip_unless_root() {
        return;
    }
    let profile = std::fs::read_to_string(repo().join("policies/default.json")).unwrap();
    let mut evil: Value = serde_json::from_str(&profile).unwrap();
    evil["defaultErrnoRet"] = json!(38);
    race_signed_file(
        "signed seccomp profile",
        "policies/default.json",
        &evil.to_string(),
        json!({"text": "a b"}),
        |run, signed| {
            let used = &run.json["data"]["sandbox"]["layers"]["seccomp"]["detail"]["digest"];
            match (run.code, run.code_word()) {
                (0, _) if used == signed => Outcome::Verified,
                (5, "untrusted_config") => Outcome::Refused,
                _ => Outcome::Unverified,
            }
        },
    );
}

/// Where the kernel refuses executable memfds (`vm.memfd_noexec` = 2, set here in a PID
/// namespace of the test's own, where it applies alone), a signed interpreter's verified
/// copy is a file in the call's `verified/exec/`, on disk; a root upm's in-memory snapshot
/// of a pinned tree, attached at `verified/tree/`, must not cover it.
#[test]
fn a_signed_pinned_python_tree_runs_where_memfds_may_not_be_executed() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    d.write("py/mod.py", GOOD_PY, false);
    let plugin = |pin: Option<String>| {
        let mut p = py_plugin("py");
        if let Some(pin) = pin {
            p["manifest_sha256"] = json!(pin);
        }
        json!({ "require_schemas": false, "python": "/usr/bin/python3", "plugins": { "P": p } })
    };
    let cfg = d.config(&plugin(None));
    let c = check(&cfg, &[]);
    assert_eq!(c.code, 0, "{}", ctx(&c));
    let digest = c.json["plugins"]["P"]["pins"]["manifest"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let cfg = d.config(&plugin(Some(digest)));
    std::fs::create_dir(d.join("keys")).unwrap();
    let secret = d.join("secret.pem");
    keygen(&secret, &d.join("keys/k.pub"));
    sign(&cfg, &secret);
    let keys = d.join("keys");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg("echo 2 > /proc/sys/vm/memfd_noexec && exec \"$0\" \"$@\"")
        .arg(upm_bin())
        .args(["run", "--config", cfg.to_str().unwrap()]);
    let cmd = with_trust_env(cmd, &[("UPM_TRUSTED_KEYS_DIR", keys.to_str().unwrap())]);
    let run = run_command(cmd, &request("P", "who", json!({})));
    assert_ok(&run);
    assert_eq!(run.result()["who"], "good", "{}", ctx(&run));
    assert_eq!(
        run.json["data"]["trust"]["status"],
        "verified",
        "{}",
        ctx(&run)
    );
    let started = &audit_of(&d, &run)[0];
    let exec = started["plugin_files"]["exec"].as_str().unwrap();
    assert!(
        exec.ends_with("/verified/exec/python3"),
        "a copy on disk: {started}"
    );
    let at = &run.json["data"]["sandbox"]["layers"]["namespaces"]["detail"]["verified"]["at"];
    assert!(
        at.as_str().unwrap().ends_with("/verified/tree"),
        "{}",
        ctx(&run)
    );
}
