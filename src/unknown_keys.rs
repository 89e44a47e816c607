//! Unknown keys in a config block, every one of them.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key, so a block with two
//! typos (`netwrok`, `read_path`) would show one, and the operator would fix it, run
//! again, and meet the next. Here every key a struct does not know is reported (with
//! the nearest known key when one is close) and taken out, so that serde then reports
//! only what else is wrong. The known keys come from the struct itself, so a field
//! added to it is known here too.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde_json::Value;

/// The field names `T` deserializes from (its `deserialize_struct` call says them).
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut probe = Probe(&[]);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// Reports every key of the object `v` that is not in `known` as `{at}: unknown key
/// "k"` (plus a suggestion) and removes it. Anything but an object is left for serde.
pub fn strip(v: &mut Value, known: &[&str], at: &str, problems: &mut Vec<String>) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        obj.remove(&key);
        let hint = match nearest(&key, known.iter().copied()) {
            Some(near) => format!(" (did you mean \"{near}\"?)"),
            None => format!(" (known keys: {})", known.join(", ")),
        };
        problems.push(format!("{at}: unknown key \"{key}\"{hint}"));
    }
}

/// The candidate nearest to `word`, when one is near enough to be a typo of it.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A deserializer that answers nothing but remembers the fields it was asked for.
struct Probe(&'static [&'static str]);

impl<'de> Deserializer<'de> for &mut Probe {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only structs are probed"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct S {
        network: bool,
        read_paths: Vec<String>,
    }

    #[test]
    fn every_unknown_key_is_reported_and_removed() {
        let mut v = json!({"netwrok": true, "read_path": [], "network": false});
        let mut problems = Vec::new();
        strip(&mut v, fields_of::<S>(), "sandbox", &mut problems);
        assert_eq!(
            problems,
            [
                "sandbox: unknown key \"netwrok\" (did you mean \"network\"?)",
                "sandbox: unknown key \"read_path\" (did you mean \"read_paths\"?)"
            ]
        );
        assert_eq!(v, json!({"network": false}));
        let mut v = json!({"zzz": 1});
        strip(&mut v, fields_of::<S>(), "x", &mut problems);
        assert!(problems[2].ends_with("(known keys: network, read_paths)"));
    }
}
