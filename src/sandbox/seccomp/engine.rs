//! The profile a container engine is handed. A container engine does not run upm's
//! program: its OCI profile gets upm's own rules written into it, for each syscall
//! those rules touch, as entries whose conditions never overlap between actions
//! (libseccomp ranks overlapping rules its own way).

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use seccompiler::SeccompCmpOp;

use super::model::{Action, Cond};
use super::plan::{self, Block, Rank};
use super::resolve::{ResolvedRule, Target};
use super::rules::{own_rules, OWN_RULE_NAMES};
use super::syscalls;
use super::{CompileOptions, Profile, SeccompError};

#[cfg(target_arch = "x86_64")]
pub(super) const NATIVE_SCMP_ARCH: &str = "SCMP_ARCH_X86_64";
#[cfg(target_arch = "aarch64")]
pub(super) const NATIVE_SCMP_ARCH: &str = "SCMP_ARCH_AARCH64";

/// The OCI profile for a container engine: the profile's own JSON, with every syscall
/// upm has rules for taken out of its entries and given entries of its own, and only the
/// native ABI listed (`architectures`, no `archMap`), as the native filter's ABI guard.
#[derive(Debug, Clone)]
pub struct EngineProfile {
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// Each of upm's own rules (`OWN_RULE_NAMES`) and what the engine's profile does about it.
    pub upm_rules: std::collections::BTreeMap<&'static str, String>,
}

/// Most entries one syscall may turn into: the complement of a mask enumerates values.
pub(super) const MAX_ENGINE_ENTRIES_PER_SYSCALL: usize = 64;

/// The engine's profile for `profile` on `target`; see [`Profile::engine_profile`].
pub(super) fn build(profile: &Profile, target: &Target) -> Result<EngineProfile, SeccompError> {
    let opts = CompileOptions {
        deny_sockets: true,
        allow_tcp: false,
    };
    let own_nrs: BTreeSet<i64> = own_rules(&opts).iter().map(|r| r.nr).collect();
    let parsed = profile.parsed()?;
    let ranked = plan::ranked_by_number(parsed, &opts, target);
    let mut raw: serde_json::Value =
        serde_json::from_slice(&profile.bytes).map_err(|source| SeccompError::Parse {
            profile: profile.name.clone(),
            source,
        })?;
    let mut names = Vec::new();
    let mut entries = Vec::new();
    for nr in &own_nrs {
        let Some(name) = syscalls::NATIVE
            .iter()
            .find(|(_, n)| n == nr)
            .map(|(name, _)| *name)
        else {
            return Err(error(profile, &nr.to_string(), "no name on this arch"));
        };
        names.push(name);
        let rules: Vec<(Rank, ResolvedRule)> = ranked
            .iter()
            .filter(|(_, r)| r.nr == *nr)
            .cloned()
            .collect();
        let block = Block::decide(&rules, parsed.default_action);
        let regions = disjoint_regions(&block).map_err(|reason| error(profile, name, &reason))?;
        if regions.len() > MAX_ENGINE_ENTRIES_PER_SYSCALL {
            return Err(error(profile, name, "too many entries"));
        }
        entries.extend(
            regions
                .iter()
                .map(|(action, conds)| oci_entry(name, *action, conds)),
        );
    }
    let obj = raw
        .as_object_mut()
        .ok_or_else(|| error(profile, "(all)", "the profile is not a JSON object"))?;
    let mut syscalls_json: Vec<serde_json::Value> = match obj.remove("syscalls") {
        Some(serde_json::Value::Array(a)) => a,
        _ => Vec::new(),
    };
    for e in &mut syscalls_json {
        let Some(e) = e.as_object_mut() else { continue };
        if let Some(serde_json::Value::Array(list)) = e.get_mut("names") {
            list.retain(|n| !n.as_str().is_some_and(|n| names.contains(&n)));
        }
        if e.get("name")
            .and_then(|n| n.as_str())
            .is_some_and(|n| names.contains(&n))
        {
            e.remove("name");
        }
    }
    // An entry left without a name would name nothing (or be refused).
    syscalls_json.retain(|e| {
        let has_names = e
            .get("names")
            .and_then(|n| n.as_array())
            .is_some_and(|a| !a.is_empty());
        has_names || e.get("name").is_some()
    });
    syscalls_json.extend(entries);
    obj.insert("syscalls".into(), serde_json::Value::Array(syscalls_json));
    obj.remove("archMap");
    obj.insert(
        "architectures".into(),
        serde_json::json!([NATIVE_SCMP_ARCH]),
    );
    let bytes = serde_json::to_vec_pretty(&raw).map_err(|source| SeccompError::Parse {
        profile: profile.name.clone(),
        source,
    })?;
    let upm_rules = OWN_RULE_NAMES
        .iter()
        .map(|(rule, what)| (*rule, format!("enforced in the engine's profile: {what}")))
        .collect();
    Ok(EngineProfile {
        digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        bytes,
        upm_rules,
    })
}

fn error(profile: &Profile, syscall: &str, reason: &str) -> SeccompError {
    SeccompError::EngineProfile {
        profile: profile.name.clone(),
        syscall: syscall.to_owned(),
        reason: reason.to_owned(),
    }
}

fn oci_entry(name: &str, action: Action, conds: &[Cond]) -> serde_json::Value {
    let (action_name, errno) = match action {
        Action::Allow => ("SCMP_ACT_ALLOW", None),
        Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
        Action::KillThread => ("SCMP_ACT_KILL_THREAD", None),
        Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
        Action::Trap => ("SCMP_ACT_TRAP", None),
        Action::Log => ("SCMP_ACT_LOG", None),
    };
    let mut e = serde_json::json!({"names": [name], "action": action_name});
    if let Some(errno) = errno {
        e["errnoRet"] = serde_json::json!(errno);
    }
    if !conds.is_empty() {
        e["args"] = conds.iter().map(oci_arg).collect();
    }
    e
}

/// One `args[]` item of an OCI entry.
fn oci_arg(c: &Cond) -> serde_json::Value {
    let (op, value, value_two) = match c.op {
        SeccompCmpOp::Eq => ("SCMP_CMP_EQ", c.value, 0),
        SeccompCmpOp::Ne => ("SCMP_CMP_NE", c.value, 0),
        SeccompCmpOp::Lt => ("SCMP_CMP_LT", c.value, 0),
        SeccompCmpOp::Le => ("SCMP_CMP_LE", c.value, 0),
        SeccompCmpOp::Gt => ("SCMP_CMP_GT", c.value, 0),
        SeccompCmpOp::Ge => ("SCMP_CMP_GE", c.value, 0),
        // OCI: `value` is the mask, `valueTwo` the datum.
        SeccompCmpOp::MaskedEq(mask) => ("SCMP_CMP_MASKED_EQ", mask, c.value),
    };
    serde_json::json!({"index": c.index, "value": value, "valueTwo": value_two, "op": op})
}

/// The conditions one of which holds exactly when `c` does not (`Err` when that
/// needs more than 16 values of a mask).
fn negation(c: &Cond) -> Result<Vec<Cond>, String> {
    let with = |op, value| Cond {
        index: c.index,
        op,
        value,
    };
    Ok(match c.op {
        SeccompCmpOp::Eq => vec![with(SeccompCmpOp::Ne, c.value)],
        SeccompCmpOp::Ne => vec![with(SeccompCmpOp::Eq, c.value)],
        SeccompCmpOp::Lt => vec![with(SeccompCmpOp::Ge, c.value)],
        SeccompCmpOp::Ge => vec![with(SeccompCmpOp::Lt, c.value)],
        SeccompCmpOp::Le => vec![with(SeccompCmpOp::Gt, c.value)],
        SeccompCmpOp::Gt => vec![with(SeccompCmpOp::Le, c.value)],
        SeccompCmpOp::MaskedEq(mask) => {
            if mask.count_ones() > 4 {
                return Err(format!(
                    "the negation of a MASKED_EQ with mask {mask:#x} (more than 4 bits)"
                ));
            }
            let bits: Vec<u64> = (0..64)
                .map(|b| 1u64 << b)
                .filter(|b| mask & b != 0)
                .collect();
            (0..1u32 << bits.len())
                .map(|sel| {
                    bits.iter()
                        .enumerate()
                        .filter(|(i, _)| sel & (1 << i) != 0)
                        .fold(0, |acc, (_, b)| acc | b)
                })
                .filter(|v| *v != c.value)
                .map(|v| with(SeccompCmpOp::MaskedEq(mask), v))
                .collect()
        }
    })
}

/// Whether every argument that satisfies `a` satisfies `b` too.
fn implies(a: &Cond, b: &Cond) -> bool {
    if a == b {
        return true;
    }
    match (&a.op, &b.op) {
        (SeccompCmpOp::MaskedEq(m1), SeccompCmpOp::MaskedEq(m2)) if a.index == b.index => {
            *m2 & !*m1 == 0 && a.value & *m2 == b.value
        }
        _ => false,
    }
}

/// A conjunction of conditions with at most one per argument (runc turns two conditions
/// on one argument into an OR). Two MASKED_EQs on one argument merge; `Ok(None)` when
/// the result can never hold; `Err` when two other conditions share an argument.
fn and_cond(conj: &[Cond], c: &Cond) -> Result<Option<Vec<Cond>>, String> {
    let mut out = conj.to_vec();
    match out.iter().position(|x| x.index == c.index) {
        None => out.push(c.clone()),
        Some(i) if out[i] == *c => {}
        Some(i) => match (&out[i].op, &c.op) {
            (SeccompCmpOp::MaskedEq(m1), SeccompCmpOp::MaskedEq(m2)) => {
                let (m1, m2) = (*m1, *m2);
                let both = m1 & m2;
                if out[i].value & both != c.value & both {
                    return Ok(None);
                }
                out[i] = Cond {
                    index: c.index,
                    op: SeccompCmpOp::MaskedEq(m1 | m2),
                    value: out[i].value | c.value,
                };
            }
            _ => {
                return Err(format!(
                    "two different comparisons of argument {} in one entry",
                    c.index
                ))
            }
        },
    }
    Ok(Some(out))
}

/// `region AND conds` for each conjunction of `region` (in disjunctive form).
fn and_all(region: &[Vec<Cond>], conds: &[Cond]) -> Result<Vec<Vec<Cond>>, String> {
    let mut out = Vec::new();
    for conj in region {
        let mut acc = Some(conj.clone());
        for c in conds {
            acc = match acc {
                Some(a) => and_cond(&a, c)?,
                None => None,
            };
        }
        out.extend(acc);
    }
    Ok(simplify(out))
}

/// NOT (c1 OR c2 OR ...), each `ci` a conjunction, in disjunctive form.
fn complement(checks: &[&[Cond]]) -> Result<Vec<Vec<Cond>>, String> {
    let mut region: Vec<Vec<Cond>> = vec![Vec::new()];
    for conds in checks {
        let mut next = Vec::new();
        for conj in &region {
            for c in *conds {
                for alt in negation(c)? {
                    next.extend(and_cond(conj, &alt)?);
                }
            }
        }
        region = simplify(next);
        if region.len() > MAX_ENGINE_ENTRIES_PER_SYSCALL {
            return Err("too many entries".into());
        }
    }
    Ok(region)
}

/// Drops conjunctions that another one already covers.
fn simplify(mut region: Vec<Vec<Cond>>) -> Vec<Vec<Cond>> {
    let covers =
        |wide: &[Cond], narrow: &[Cond]| wide.iter().all(|w| narrow.iter().any(|n| implies(n, w)));
    let mut out: Vec<Vec<Cond>> = Vec::new();
    region.sort_by_key(Vec::len);
    for conj in region {
        if !out.iter().any(|kept| covers(kept, &conj)) {
            out.push(conj);
        }
    }
    out
}

/// The decision as (action, conjunction) regions: regions of different actions never
/// overlap, and together they cover every call. A check is decided where it holds
/// and no earlier check of another action does (an earlier one of the same action
/// gives the same answer); `otherwise` where none holds.
fn disjoint_regions(block: &Block) -> Result<Vec<(Action, Vec<Cond>)>, String> {
    let mut out = Vec::new();
    for (i, check) in block.checks.iter().enumerate() {
        let earlier: Vec<&[Cond]> = block.checks[..i]
            .iter()
            .filter(|c| c.action != check.action)
            .map(|c| c.conds.as_slice())
            .collect();
        for conj in and_all(&complement(&earlier)?, &check.conds)? {
            out.push((check.action, conj));
        }
    }
    let all: Vec<&[Cond]> = block.checks.iter().map(|c| c.conds.as_slice()).collect();
    for conj in complement(&all)? {
        out.push((block.otherwise, conj));
    }
    Ok(out)
}
