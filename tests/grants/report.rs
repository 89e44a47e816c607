//! Grants are reported and audited: the result's sandbox report and the `started`
//! entry list each one; `upm check` and `upm list` show which arguments are grants.

use super::*;

#[test]
fn grants_are_in_the_result_and_in_the_started_entry() {
    let Some(fx) = Fx::new(Who::Root) else { return };
    let a = fx.join("roots/proj/a.txt");
    let out = fx.join("roots/proj/out");
    let run = fx.call(json!({ "read": a, "write": format!("{}/./", out.display()), "ops": [] }));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let root = fx.join("roots");
    // The path as the caller wrote it (the same path, component by component, as what
    // was opened: no "resolved" beside it).
    let expected = json!([
        { "argument": "/read", "path": a, "access": "read", "root": root, "kind": "file" },
        { "argument": "/write", "path": format!("{}/./", out.display()), "access": "write",
          "root": root, "kind": "directory" },
    ]);
    let sandbox = &run.json["data"]["sandbox"];
    assert_eq!(sandbox["grants"], expected, "{sandbox}");
    // Landlock's rules and the writable mounts say the same.
    assert_eq!(
        sandbox["layers"]["landlock"]["detail"]["grants"],
        json!([{ "path": a, "access": "read" }, { "path": out, "access": "write" }])
    );
    let mounts = &sandbox["layers"]["namespaces"]["detail"]["writable_mounts"];
    assert!(mounts.as_array().unwrap().contains(&json!(out)), "{mounts}");
    assert!(!mounts.as_array().unwrap().contains(&json!(a)), "{mounts}");

    // Audited before the plugin ran: `started` records them, `finished` follows it.
    let audit = fx.audit_of(&run);
    let events: Vec<&Value> = audit.iter().map(|e| &e["event"]).collect();
    assert_eq!(events, ["started", "finished"], "{audit:?}");
    assert_eq!(audit[0]["sandbox_requested"]["grants"], expected);
    assert_eq!(audit[1]["sandbox"], json!({ "same_as_started": true }));
    // A call without grant arguments reports none.
    let run = fx.call(json!({ "ops": [] }));
    assert!(
        run.json["data"]["sandbox"].get("grants").is_none(),
        "{}",
        ctx(&run)
    );
    let verify = Command::new(common::upm_bin())
        .args(["audit", "verify", "--config", fx.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn check_lists_grant_arguments_and_roots_and_list_shows_the_annotation() {
    let Some(fx) = Fx::new(Who::Root) else { return };
    let mut check = Command::new(common::upm_bin());
    check.args(["check", "--config", fx.config.to_str().unwrap()]);
    let r = run_command(check, b"");
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(
        r.json["plugins"]["G"]["grants"],
        json!({
            "within": [fx.join("roots")],
            "arguments": { "probe": [
                { "argument": "/kwargs/more", "access": "read" },
                { "argument": "/read", "access": "read" },
                { "argument": "/write", "access": "write" },
            ]}
        }),
        "{}",
        ctx(&r)
    );
    let mut list = Command::new(common::upm_bin());
    list.args(["list", "--config", fx.config.to_str().unwrap()]);
    let r = run_command(list, b"");
    assert_eq!(r.code, 0, "{}", ctx(&r));
    let g = &r.json["plugins"]["G"];
    assert_eq!(g["grants_within"], json!([fx.join("roots")]));
    let schema = &g["methods"]["probe"]["schema"];
    assert_eq!(
        schema["properties"]["read"]["x-upm-grant"], "read",
        "{schema}"
    );
    assert_eq!(schema["properties"]["write"]["x-upm-grant"], "write");
    assert_eq!(schema["$defs"]["readable"]["x-upm-grant"], "read");
}

/// MCP's `tools/list` (through `upm mcp`, as a client sees it) and `upm list --format
/// mcp|openai` keep the annotation in the tool's input schema: a client knows the
/// argument is a path. A `tools/call` grants as `upm run` does, and refuses alike.
#[test]
fn mcp_tools_list_shows_the_annotation_and_tools_call_grants() {
    let Some(fx) = Fx::new(Who::Root) else { return };
    let (a, b) = (fx.join("roots/proj/a.txt"), fx.join("roots/proj/b.txt"));
    let lines = [
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": { "name": "grants-test", "version": "1" } } }),
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }),
        // A tools/call is a upm call: its grant opens the file, a path outside is refused.
        json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "G__probe",
            "arguments": { "read": a, "ops": [["read", a], ["read", b]] } } }),
        json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
            "name": "G__probe",
            "arguments": { "read": fx.join("outside/secret.txt"), "ops": [] } } }),
    ];
    // Stdin stays open until every request is answered: EOF cancels calls in flight.
    let mut child = Command::new(common::upm_bin())
        .args(["mcp", "--config", fx.config.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in &lines {
        use std::io::Write;
        writeln!(stdin, "{l}").unwrap();
    }
    let mut answers = Vec::new();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in std::io::BufRead::lines(stdout) {
        answers.push(serde_json::from_str::<Value>(&line.unwrap()).unwrap());
        if answers.len() == 4 {
            break;
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "upm mcp: {status:?}");
    let answer = |id: u64| {
        answers
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no answer to {id}: {answers:?}"))
    };
    let listed = answer(2);
    let tools = listed["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "{listed}");
    let check = |schema: &Value| {
        assert_eq!(
            schema["properties"]["read"]["x-upm-grant"], "read",
            "{schema}"
        );
        assert_eq!(
            schema["properties"]["write"]["x-upm-grant"], "write",
            "{schema}"
        );
        assert_eq!(
            schema["$defs"]["readable"]["x-upm-grant"], "read",
            "{schema}"
        );
    };
    check(&tools[0]["inputSchema"]);
    let called = &answer(3)["result"];
    assert_eq!(called["isError"], false, "{called}");
    let results = &called["structuredContent"]["results"];
    assert_eq!(results[0]["value"], "alpha", "{called}");
    assert_eq!(
        results[1]["errno"], EACCES,
        "the file beside the grant: {called}"
    );
    let refused = &answer(4)["result"];
    assert_eq!(refused["isError"], true, "{refused}");
    let text = refused.to_string();
    assert!(
        text.contains("invalid_args") && text.contains("not under any of the roots"),
        "{text}"
    );
    for (format, at) in [
        ("mcp", "/tools/0/inputSchema"),
        ("openai", "/0/function/parameters"),
    ] {
        let mut list = Command::new(common::upm_bin());
        list.args([
            "list",
            "--format",
            format,
            "--config",
            fx.config.to_str().unwrap(),
        ]);
        let r = run_command(list, b"");
        assert_eq!(r.code, 0, "{}", ctx(&r));
        check(
            r.json
                .pointer(at)
                .unwrap_or_else(|| panic!("{format}: {}", r.stdout)),
        );
    }
}
