//! The steps that may refuse a call before anything is prepared for it: parse,
//! authorize (the whitelist), the signature over the files the call uses, validate
//! (the method's schema and, for a Python class, the shape UPM called it with).

use super::{Call, Input, INTROSPECT_METHOD};
use crate::codes::Coded;
use crate::compat;
use crate::config::{Config, Plugin, PluginKind};
use crate::error::{Code, Failure};
use crate::launch::Runnable;
use crate::outcome::Ran;
use crate::request::{self, Request, RequestError};
use crate::schema::MethodSchema;
use crate::trust;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::Read;

/// The request, from wherever it came; whatever it names is noted in `call` for the
/// response and the audit, even when it is then refused.
pub(super) fn parse<R: Read>(
    input: Input<R>,
    cap: u64,
    call: &mut Call,
) -> Result<Request, Failure> {
    let bad = Failure::from;
    let req = match input {
        Input::Stdin(reader) => {
            let bytes = request::read_bounded(reader, cap).map_err(bad)?;
            parse_document(&bytes, call).map_err(bad)?
        }
        Input::TooLong => return Err(bad(RequestError::TooLarge { cap })),
        Input::Line(bytes) => parse_document(&bytes, call).map_err(bad)?,
        Input::Argv {
            plugin,
            method,
            args,
        } => {
            call.plugin = Some(request::noted(&plugin.to_string_lossy()));
            call.method = Some(request::noted(&method.to_string_lossy()));
            let utf8 = |s: OsString, which| {
                s.into_string()
                    .map_err(|_| bad(RequestError::ArgvUtf8(which)))
            };
            let (plugin, method) = (utf8(plugin, "plugin")?, utf8(method, "method")?);
            // UPM's sentence for anything wrong with json_args, upm's reason after it.
            let args_bad = |e| {
                let mut f = bad(e);
                f.message = compat::json_args(&f.message);
                f
            };
            let args = args
                .into_string()
                .map_err(|_| args_bad(RequestError::ArgvUtf8("args")))?;
            if args.len() as u64 > cap {
                return Err(args_bad(RequestError::TooLarge { cap }));
            }
            let args = request::parse_json(args.as_bytes(), true).map_err(args_bad)?;
            let req = Request {
                plugin,
                method,
                args,
                request_id: None,
                introspect: None,
            };
            req.check().map_err(bad)?;
            req
        }
        Input::Parsed(req) => {
            call.plugin = Some(request::noted(&req.plugin));
            call.method = Some(request::noted(&req.method));
            if let Some(id) = req
                .request_id
                .as_ref()
                .filter(|id| request::valid_request_id(id))
            {
                call.request_id = id.clone();
            }
            req.check().map_err(bad)?;
            req
        }
        Input::Introspect { plugin, methods } => {
            call.plugin = Some(plugin.clone());
            call.method = Some(INTROSPECT_METHOD.to_owned());
            Request {
                plugin,
                method: INTROSPECT_METHOD.to_owned(),
                args: json!({ "methods": methods }),
                request_id: None,
                introspect: Some(methods),
            }
        }
    };
    Ok(req)
}

/// A request document; whatever it names is noted for the response and the audit,
/// even when the request is then refused.
fn parse_document(bytes: &[u8], call: &mut Call) -> Result<Request, RequestError> {
    let doc = request::parse_json(bytes, false)?;
    if let Some(id) = request::peek_request_id(&doc) {
        call.request_id = id;
    }
    if let Some(o) = doc.as_object() {
        call.plugin = o.get("plugin").and_then(Value::as_str).map(request::noted);
        call.method = o.get("method").and_then(Value::as_str).map(request::noted);
    }
    request::from_value(doc)
}

/// The whitelist: the plugin, then the method, then whether it is private (UPM's
/// order and sentences, upm's reason after them where it has one). upm's own
/// introspection (`upm migrate`) names no method: only its plugin is looked up.
pub(super) fn authorize<'c>(config: &'c Config, req: &Request) -> Result<&'c Plugin, Failure> {
    if req.introspect.is_some() {
        return config.plugins.get(&req.plugin).ok_or_else(|| {
            Failure::new(
                Code::NotWhitelisted,
                compat::not_in_config(&req.plugin, &config.plugin_order),
            )
        });
    }
    let plugin = config
        .plugins
        .get(&req.plugin)
        .filter(|_| request::valid_name(&req.plugin))
        .ok_or_else(|| {
            let mut text = compat::not_in_config(&req.plugin, &config.plugin_order);
            if !request::valid_name(&req.plugin) {
                text.push_str(
                    " (not a valid plugin name: it must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$)",
                );
            }
            Failure::new(Code::NotWhitelisted, text)
        })?;
    let listed =
        plugin.methods.contains_key(&req.method) || plugin.private_methods.contains(&req.method);
    if !listed {
        let mut text = compat::not_allowed(&req.method, &req.plugin);
        if !request::valid_name(&req.method) && !request::valid_private_name(&req.method) {
            text.push_str(
                " (not a valid method name: it must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$)",
            );
        }
        return Err(Failure::new(Code::MethodNotAllowed, text));
    }
    if req.method.starts_with('_') {
        return Err(Failure::new(
            Code::MethodNotAllowed,
            format!(
                "{} (methods starting with '_' are never callable)",
                compat::private(&req.method)
            ),
        ));
    }
    Ok(plugin)
}

/// Why no schema checks a method's args (the config allows that: see `config`).
pub(super) fn no_schema(config: &Config, plugin: &Plugin, method: &str) -> String {
    let why = match plugin.methods.get(method) {
        Some(m) if m.upm_whitelist_only => "is whitelisted only through UPM's \"allowed_methods\"",
        _ if config.require_schemas == Some(false) => {
            "has none, and the config sets \"require_schemas\": false"
        }
        _ => "has none",
    };
    format!(
        "no schema checked the args: method \"{method}\" of plugin \"{}\" {why}",
        plugin.name
    )
}

/// A Python class plugin is called as UPM called it, `method(*args, **kwargs)`: the
/// args must have that shape (UPM would have failed on anything else, later and less
/// clearly).
pub(super) fn check_python_args(plugin: &Plugin, args: &Value) -> Result<(), Failure> {
    if !matches!(plugin.kind, PluginKind::PythonClass { .. }) {
        return Ok(());
    }
    let shape = match args {
        Value::Object(o) => {
            o.get("args").is_none_or(|a| a.is_array())
                && o.get("kwargs").is_none_or(|k| k.is_object())
        }
        _ => false,
    };
    if shape {
        return Ok(());
    }
    Err(Failure::new(
        Code::BadRequest,
        "the args of a Python class plugin must be an object {\"args\": [...], \"kwargs\": {...}} \
         (each optional, with \"project_root\" and \"cache_dir\" if the caller sets them)",
    ))
}

pub(super) fn validate(schema: Option<&MethodSchema>, args: &Value) -> Result<(), Failure> {
    let Some(schema) = schema else { return Ok(()) };
    schema.validate(args).map_err(|r| {
        rejected(
            Code::InvalidArgs,
            "the args do not match the method's schema",
            &r,
        )
    })
}

/// A result must match the method's `output_schema`, when it declares one: one that
/// does not is the plugin's failure, and is not passed on.
pub(super) fn check_result(schema: Option<&MethodSchema>, mut ran: Ran) -> Ran {
    let (Some(schema), None, Some(result)) = (schema, &ran.failure, &ran.result) else {
        return ran;
    };
    if let Err(r) = schema.validate(result) {
        let what = "the plugin's result does not match the method's output_schema";
        ran.failure = Some(rejected(Code::PluginFailed, what, &r));
        ran.result = None;
    }
    ran
}

fn rejected(code: Code, what: &str, r: &crate::schema::Rejection) -> Failure {
    let n = r.total;
    let listed = if n > r.violations.len() {
        format!("; the first {} are listed", r.violations.len())
    } else {
        String::new()
    };
    Failure::new(
        code,
        format!(
            "{what} ({n} violation{}{listed})",
            if n == 1 { "" } else { "s" }
        ),
    )
    .with_details(json!({ "violations": r.violations, "violation_count": n }))
}

/// Strict: a config that is unsigned, badly signed or changed stops here.
/// Warn: the call goes on, and the result and the audit say why it should not have.
pub(super) fn verify_trust(
    config: &Config,
    files: &trust::CallFiles<'_>,
    call: &mut Call,
) -> Result<(), Failure> {
    let Some(verdict) = trust::check(config, Some(files)) else {
        return Ok(());
    };
    call.trust = Some(verdict.to_json());
    let outcome = match (&verdict.result, verdict.mode) {
        (Ok(_), _) => Ok(()),
        (Err(e), trust::Mode::Warn) => {
            call.warnings
                .push(format!("the config is not trusted: {e}"));
            Ok(())
        }
        (Err(e), _) => Err(Failure::new(
            e.code(),
            format!("the config is not trusted: {e}; nothing was run"),
        )),
    };
    call.verdict = Some(verdict);
    outcome
}

/// The executable about to run, against the signature when it lists it (a pinned
/// command, the Python interpreter): its digest is of the very bytes that are exec'd.
/// Strict refuses a mismatch; warn records it.
pub(super) fn verify_executable(
    config: &Config,
    plugin: &Plugin,
    runnable: &Runnable,
    call: &mut Call,
) -> Result<(), Failure> {
    let Some(verdict) = call.verdict.as_mut() else {
        return Ok(());
    };
    let Ok(signed) = &verdict.result else {
        // Already failed (warn mode): recorded once.
        return Ok(());
    };
    let exe = &runnable.exe;
    if !trust::signed_executables(plugin).contains(&exe.source.as_path()) {
        return Ok(());
    }
    let Err(e) = trust::check_executable(config, signed, &exe.source, &exe.sha256) else {
        return Ok(());
    };
    let failure = Failure::new(
        e.code(),
        format!("the config is not trusted: {e}; nothing was run"),
    );
    let warning = format!("the config is not trusted: {e}");
    verdict.result = Err(e);
    call.trust = Some(verdict.to_json());
    if verdict.mode == trust::Mode::Warn {
        call.warnings.push(warning);
        return Ok(());
    }
    Err(failure)
}
