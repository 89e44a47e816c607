//! Every connection is an audit entry of its own.

use super::*;

#[test]
fn every_connection_is_an_audit_entry_of_its_own() {
    let allowed = Server::start(files(&[("/", b"12345")]));
    let other = Server::start(files(&[("/", b"secret\n")]));
    let Some(fx) = fixture(allow(&[at(allowed.port)])) else {
        return;
    };
    let run = fx.call(
        "fetch",
        "get",
        json!({"urls": [allowed.url("/"), other.url("/x?token=1")]}),
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let call_id = run.json["data"]["call_id"].as_str().unwrap();
    let entries = fx.dir.audit_lines();
    let events: Vec<&str> = entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["started", "connection", "connection", "finished"],
        "{entries:#?}"
    );
    // Each is appended as it ends, which need not be the order they began in.
    let c = fx.connections();
    let (ok, refused) = (&c[0], &c[1]);
    assert_eq!(
        (&ok["connection"], &refused["connection"]),
        (&json!(1), &json!(2))
    );
    for c in [ok, refused] {
        assert_eq!(c["call_id"], call_id);
        assert_eq!(c["plugin"], "fetch");
        assert_eq!(c["protocol"], "http");
        assert!(c["duration_ms"].as_f64().is_some(), "{c}");
        assert!(
            c["hash"].is_string() && c["prev"].is_string(),
            "chained: {c}"
        );
    }
    assert_eq!(ok["verdict"], "allowed");
    assert_eq!(ok["target"], at(allowed.port));
    assert_eq!(ok["address"], at(allowed.port));
    assert_eq!(ok["entry"], at(allowed.port));
    assert!(ok["bytes_up"].as_u64().unwrap() > 50, "{ok}");
    assert!(ok["bytes_down"].as_u64().unwrap() >= 5, "{ok}");
    assert_eq!(ok["end"], "closed");
    assert_eq!(refused["verdict"], "refused");
    assert_eq!(refused["target"], at(other.port));
    assert_eq!(refused["address"], Value::Null);
    assert!(refused["reason"]
        .as_str()
        .unwrap()
        .contains("not on the plugin's network allowlist"));
    assert_eq!(refused["bytes_down"], 0);
    // The `finished` entry carries the summary, and the started one the list.
    assert_eq!(entries[3]["egress"]["allowed"], 1);
    assert_eq!(entries[3]["egress"]["refused"], 1);
    assert_eq!(
        entries[0]["sandbox_requested"]["layers"]["network"]["detail"]["allow"],
        json!([at(allowed.port)])
    );
    fx.verify_log();
}

#[test]
fn a_connection_that_asks_for_nothing_is_audited_too() {
    let Some(fx) = fixture(allow(&["pypi.org".into()])) else {
        return;
    };
    let (r, egress) = fx.ok("probe", "probe", json!({"silent": 5}));
    assert_eq!(r["silent"], 5);
    let c = fx.connections();
    assert_eq!(c.len(), 5, "{c:#?}");
    for e in &c {
        assert_eq!(e["verdict"], "refused");
        assert_eq!(e["target"], Value::Null);
        let why = e["reason"].as_str().unwrap();
        assert!(
            why.contains("no request") || why.contains("before the proxy took"),
            "{why}"
        );
    }
    assert_eq!(egress["connections"], 5);
    assert_eq!(egress["refused"], 5);
}
