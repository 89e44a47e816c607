//! Per-call grants, between validate and prepare: each argument the method's schema
//! marks `x-upm-grant`, once the args are valid, opened under the plugin's
//! `grants_within` roots (see `sandbox::grants`), or the call refused before anything
//! is prepared for it.

use crate::config::Plugin;
use crate::error::Failure;
use crate::sandbox::grants::{self, Access, Grant};
use crate::schema::MethodSchema;
use serde_json::Value;

/// The call's grants, opened; an argument the caller left out (or set to null) grants nothing.
pub(super) fn open(
    plugin: &Plugin,
    schema: Option<&MethodSchema>,
    args: &Value,
) -> Result<Vec<Grant>, Failure> {
    let Some(schema) = schema else {
        return Ok(Vec::new());
    };
    let mut opened = Vec::new();
    for arg in schema.grants() {
        let value = match arg.value(args) {
            None | Some(Value::Null) => continue,
            Some(v) => v,
        };
        let access = if arg.write {
            Access::Write
        } else {
            Access::Read
        };
        opened.push(grants::open(
            &arg.pointer(),
            value,
            access,
            &plugin.grants_within,
        )?);
    }
    Ok(opened)
}

/// The sandbox report with the call's grants in it, for the result and both audit entries.
pub(super) fn reported(mut summary: Value, grants: &[Grant]) -> Value {
    if !grants.is_empty() {
        summary["grants"] = grants::report(grants);
    }
    summary
}
