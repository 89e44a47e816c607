//! Exit 0: the plugin ran and its stdout (and stderr) became the result.

use super::*;

#[test]
fn success_runs_the_plugin_and_parses_its_stdout() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let r = call(&c, "TextTools", "upper", json!({"text": "héllo world"}));
    assert_eq!(ok(&r), &json!({"text": "HÉLLO WORLD"}));
    let data = &r.json["data"];
    assert_eq!(data["plugin"], "TextTools");
    assert_eq!(data["method"], "upper");
    assert_eq!(data["exit_code"], 0);
    // The result is the stdout: it is not echoed a second time.
    assert!(data.get("stdout").is_none(), "{data}");
    assert_eq!(data["stderr"]["text"], "");
    assert_eq!(data["stderr"]["truncated"], false);
    assert_uuid_v7(r.json["request_id"].as_str().unwrap());

    let r = call(&c, "TextTools", "wordcount", json!({"text": "a b\nc"}));
    assert_eq!(ok(&r), &json!({"lines": 2, "words": 3, "chars": 5}));
}

#[test]
fn empty_stdout_is_a_null_result() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let r = call(&c, "TextTools", "noop", json!({}));
    assert_eq!(ok(&r), &Value::Null);
    assert!(
        r.json["data"].as_object().unwrap().contains_key("result"),
        "result: null must be present, not omitted: {}",
        r.stdout
    );
}

#[test]
fn plugin_stderr_is_captured_beside_the_result() {
    let d = setup();
    let p = sh(&d, "diag", r#"echo "diagnostic line" >&2; echo '{"n": 1}'"#);
    let c = cfg(&d, json!({"plugins": {"Diag": cmd(&p, &["go"])}}));
    let r = call(&c, "Diag", "go", json!({}));
    assert_eq!(ok(&r), &json!({"n": 1}));
    let e = &r.json["data"]["stderr"];
    assert_eq!(e["text"], "diagnostic line\n");
    assert_eq!(e["bytes"], 16);
    assert_eq!(e["truncated"], false);
}

#[test]
fn output_caps_truncate_and_flag_each_stream() {
    let d = setup();
    // 5000 bytes on one stream, then a JSON result.
    let loud = |fd: &str| {
        format!(
            "i=0; while [ $i -lt 100 ]; do printf '%s' \
             xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx >&{fd}; i=$((i+1)); done; echo '{{}}'"
        )
    };
    let err_p = sh(&d, "loud_err", &loud("2"));
    let out_p = sh(&d, "loud_out", &loud("1"));
    let c = cfg(
        &d,
        json!({
            "sandbox": { "limits": { "timeout_ms": 5000, "output_bytes": 1000 } },
            "plugins": { "LoudErr": cmd(&err_p, &["go"]), "LoudOut": cmd(&out_p, &["go"]) }
        }),
    );
    for (plugin, stream) in [("LoudErr", "stderr"), ("LoudOut", "stdout")] {
        let r = call(&c, plugin, "go", json!({}));
        let data = err(&r, 13, "limit_exceeded");
        assert_eq!(data["limit"], "output", "{plugin}");
        let s = &data[stream];
        assert_eq!(s["truncated"], true, "{plugin}: {s}");
        let kept = s["text"].as_str().unwrap().len() as u64;
        assert!(kept <= 1000, "{plugin}: kept {kept} bytes past the cap");
        assert!(
            s["bytes"].as_u64().unwrap() > 1000,
            "{plugin}: bytes counts what was printed: {s}"
        );
        assert!(data.get("result").is_none(), "{plugin}: no result");
    }
}

/// Megabytes on both streams at once, in odd-sized writes, under the cap: kept byte for
/// byte, through each buffer's growth (and the faulting-in of its pages between reads).
#[test]
fn megabytes_on_both_streams_are_kept_exactly() {
    let d = setup();
    let writer = r#"#!/usr/bin/python3
import os, sys
sys.stdin.read()
def pattern(seed, n):
    block, x = bytearray(), seed
    for _ in range(4093):
        x = (x * 1103515245 + 12345) % 2**31
        block.append(97 + x % 26)
    return (bytes(block) * (n // 4093 + 1))[:n]
err = pattern(7, 2_500_001)
body = pattern(3, 3_300_007)
out = b'{"s": "' + body + b'"}'
i = j = 0
step = 1
while i < len(out) or j < len(err):
    step = step * 7 % 200_003 + 1
    if i < len(out):
        i += os.write(1, out[i:i + step])
    if j < len(err):
        j += os.write(2, err[j:j + step // 2 + 1])
"#;
    let p = d.write("plugins/both.py", writer, true);
    let c = cfg(
        &d,
        json!({
            "sandbox": { "limits": { "timeout_ms": 20000, "output_bytes": 8u64 << 20 } },
            "plugins": { "Both": cmd(p.to_str().unwrap(), &["go"]) }
        }),
    );
    let r = call(&c, "Both", "go", json!({}));
    let result = ok(&r).clone();
    // The same generator, here: a 4093-byte block (a prime, so no page lines up) repeated.
    let pattern = |seed: u64, n: usize| {
        let mut x = seed;
        let block: String = (0..4093)
            .map(|_| {
                x = (x * 1103515245 + 12345) % (1 << 31);
                (b'a' + (x % 26) as u8) as char
            })
            .collect();
        block.repeat(n / 4093 + 1)[..n].to_owned()
    };
    assert!(
        result["s"] == pattern(3, 3_300_007),
        "stdout's 3.3 MB came back altered"
    );
    let e = &r.json["data"]["stderr"];
    assert_eq!(e["bytes"], 2_500_001);
    assert_eq!(e["truncated"], false);
    assert!(
        e["text"] == pattern(7, 2_500_001),
        "stderr's 2.5 MB came back altered"
    );
}
