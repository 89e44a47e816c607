//! What keeps the original UPM entrypoint's callers working: its sentences, its
//! module lookup through the caller's `PYTHONPATH`, and the order of its config's
//! plugins.
//!
//! UPM's scripts match the start of `data.error`, so each sentence here is the
//! original's, word for word; upm adds its own words after it, never before.

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// UPM's usage line (exit 2), as its scripts know it.
pub const USAGE: &str = "Usage: python entrypoint.py <plugin_class> <method> <json_args>";

pub fn json_args(e: &impl std::fmt::Display) -> String {
    format!("Error parsing JSON args: {e}")
}

/// `path` as the caller named it (`--config`, `UPM_CONFIG_PATH` or the default).
pub fn config_load(path: &Path, e: &impl std::fmt::Display) -> String {
    format!("Failed to load config from {}: {e}", path.display())
}

/// `names` in the config's order, as Python prints a list of them.
pub fn not_in_config(plugin: &str, names: &[String]) -> String {
    let list: Vec<String> = names.iter().map(|n| py_repr(n)).collect();
    format!(
        "Plugin class '{}' not in config: [{}]",
        crate::request::noted(plugin),
        list.join(", ")
    )
}

pub fn cannot_import(module: &str, e: &str) -> String {
    format!("Cannot import plugin module '{module}'. Error: {e}")
}

pub fn class_not_found(class: &str, module: &str) -> String {
    format!("Plugin class '{class}' not found in module {module}")
}

pub fn instantiation_failed(plugin: &str, e: &str) -> String {
    format!("Plugin '{plugin}' instantiation failed: {e}")
}

pub fn not_allowed(method: &str, plugin: &str) -> String {
    format!(
        "Method '{}' not allowed for plugin '{}'",
        crate::request::noted(method),
        crate::request::noted(plugin)
    )
}

pub fn private(method: &str) -> String {
    format!(
        "Method '{}' is private and cannot be called directly",
        crate::request::noted(method)
    )
}

pub fn not_found(method: &str, plugin: &str) -> String {
    format!("Method '{method}' not found in plugin '{plugin}'")
}

pub fn execution_failed(e: &str) -> String {
    format!("Method execution failed: {e}")
}

pub fn logging_failed(e: &impl std::fmt::Display) -> String {
    format!("Logging configuration failed: {e}")
}

/// A string as Python's `repr()` prints it (how UPM's "not in config" sentence lists
/// the plugins): single quotes unless only double quotes avoid escaping.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The names under `"plugins"` in the order the file lists them (a JSON object's
/// order, which `serde_json::Map` does not keep): UPM's sentence lists them so.
pub fn plugin_names_in_file_order(bytes: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        plugins: Option<Keys>,
    }
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys: Vec<String> = Vec::new();
                    while let Some(k) = map.next_key::<String>()? {
                        map.next_value::<IgnoredAny>()?;
                        // A repeated key counts once, where JSON parsing keeps it: last.
                        keys.retain(|seen| *seen != k);
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Doc>(bytes)
        .ok()
        .and_then(|d| d.plugins)
        .map(|k| k.0)
        .unwrap_or_default()
}

/// A Python class plugin's import path taken, as UPM took it, from the caller's
/// `PYTHONPATH` (the config names no `python_path`).
///
/// Resolved once, when the config loads, into absolute directories that mean the
/// same whatever the plugin's working directory: a relative entry is made absolute
/// against the caller's working directory (as Python itself does at start-up); an
/// empty entry, which Python reads as "the current directory" and which is usually
/// a stray colon (`PYTHONPATH=$PYTHONPATH:/x` with nothing before), is ignored
/// rather than opening the caller's whole working directory to the plugin (write
/// `.` to mean it); entries that do not exist or are not directories are ignored
/// (Python skips them too; zip files are not supported). What was ignored, and why,
/// is reported with the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPythonPath {
    /// `PYTHONPATH` as the caller set it (`None`: not set).
    pub raw: Option<String>,
    /// The caller's working directory, against which relative entries were resolved.
    pub cwd: Option<PathBuf>,
    /// The directories, absolute, in order, each once.
    pub paths: Vec<PathBuf>,
    /// Entries left out, each with the reason.
    pub ignored: Vec<String>,
    /// Why no call may use this path (every call of the plugin is then refused).
    pub problem: Option<String>,
}

pub const PYTHONPATH: &str = "PYTHONPATH";

impl EnvPythonPath {
    /// The caller's `PYTHONPATH`, resolved against the caller's working directory.
    pub fn from_env() -> EnvPythonPath {
        EnvPythonPath::resolve(std::env::var_os(PYTHONPATH), std::env::current_dir())
    }

    pub fn resolve(var: Option<OsString>, cwd: std::io::Result<PathBuf>) -> EnvPythonPath {
        let mut out = EnvPythonPath {
            raw: None,
            cwd: cwd.as_ref().ok().cloned(),
            paths: Vec::new(),
            ignored: Vec::new(),
            problem: None,
        };
        let Some(var) = var else {
            return out;
        };
        let Ok(raw) = var.into_string() else {
            out.problem = Some("PYTHONPATH is not valid UTF-8".into());
            return out;
        };
        out.raw = Some(raw.clone());
        for entry in raw.split(':') {
            if entry.is_empty() {
                if !raw.is_empty() {
                    out.ignored.push(
                        "an empty entry (Python would read it as the current directory; \
                         write . to mean that): ignored"
                            .into(),
                    );
                }
                continue;
            }
            let p = Path::new(entry);
            let joined = if p.is_absolute() {
                p.to_path_buf()
            } else {
                match &cwd {
                    Ok(dir) => dir.join(p),
                    Err(e) => {
                        out.problem = Some(format!(
                            "the relative PYTHONPATH entry {entry:?} cannot be resolved: the \
                             caller's working directory cannot be read ({e})"
                        ));
                        continue;
                    }
                }
            };
            let abs = lexically_normal(&joined);
            let shown = abs.display();
            if out.paths.contains(&abs) {
                out.ignored
                    .push(format!("{shown}: listed twice, kept once"));
            } else if !abs.exists() {
                out.ignored.push(format!("{shown}: does not exist"));
            } else if !abs.is_dir() {
                out.ignored.push(format!(
                    "{shown}: not a directory (zip imports are not supported)"
                ));
            } else {
                out.paths.push(abs);
            }
        }
        out
    }

    /// For `data.sandbox` and the audit entries.
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "from": "environment",
            "PYTHONPATH": self.raw,
            "cwd": self.cwd,
            "paths": self.paths,
            "ignored": self.ignored,
        })
    }
}

/// `p` (absolute) with `.` and `..` resolved by name, as Python's `os.path.abspath`
/// resolves a `PYTHONPATH` entry (a symlinked directory followed by `..` means its
/// lexical parent, as for Python's imports).
pub(crate) fn lexically_normal(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_reprs() {
        assert_eq!(py_repr("MockPlugin"), "'MockPlugin'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_repr("a\\b\n\u{1}"), "'a\\\\b\\n\\x01'");
        assert_eq!(py_repr("é"), "'é'");
        assert_eq!(
            not_in_config("X", &["B".into(), "A".into()]),
            "Plugin class 'X' not in config: ['B', 'A']"
        );
        assert_eq!(
            not_in_config("X", &[]),
            "Plugin class 'X' not in config: []"
        );
    }

    #[test]
    fn plugin_names_keep_the_files_order() {
        let text = br#"{"policy": {}, "plugins": {"Z": {"x": [1, {"y": 2}]}, "A": 1, "M": null}}"#;
        assert_eq!(plugin_names_in_file_order(text), ["Z", "A", "M"]);
        assert_eq!(
            plugin_names_in_file_order(br#"{"plugins": {"B": 1, "A": 2, "B": 3}}"#),
            ["A", "B"]
        );
        assert!(plugin_names_in_file_order(br#"{"plugins": []}"#).is_empty());
        assert!(plugin_names_in_file_order(b"not json").is_empty());
    }

    #[test]
    fn pythonpath_entries_become_absolute_directories() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path();
        for sub in ["a", "b", "rel"] {
            std::fs::create_dir(base.join(sub)).unwrap();
        }
        std::fs::write(base.join("lib.zip"), b"").unwrap();
        let var = format!(
            ":{a}::rel:./b:{a}:{base}/missing:{base}/lib.zip::a/../b/./../rel",
            a = base.join("a").display(),
            base = base.display()
        );
        let p = EnvPythonPath::resolve(Some(var.clone().into()), Ok(base.to_path_buf()));
        assert_eq!(p.raw.as_deref(), Some(var.as_str()));
        assert_eq!(
            p.paths,
            [base.join("a"), base.join("rel"), base.join("b")],
            "{p:?}"
        );
        let ignored = p.ignored.join("\n");
        assert_eq!(p.ignored.len(), 7, "{ignored}");
        assert!(ignored.contains("rel: listed twice"), "{ignored}");
        assert_eq!(ignored.matches("an empty entry").count(), 3, "{ignored}");
        assert!(ignored.contains("listed twice"), "{ignored}");
        assert!(ignored.contains("missing: does not exist"), "{ignored}");
        assert!(ignored.contains("lib.zip: not a directory"), "{ignored}");
        assert!(p.problem.is_none());
    }

    #[test]
    fn an_unset_or_unreadable_pythonpath() {
        let p = EnvPythonPath::resolve(None, Ok("/".into()));
        assert!(p.paths.is_empty() && p.ignored.is_empty() && p.raw.is_none());
        let p = EnvPythonPath::resolve(Some("".into()), Ok("/".into()));
        assert!(p.paths.is_empty() && p.ignored.is_empty());
        use std::os::unix::ffi::OsStringExt;
        let p =
            EnvPythonPath::resolve(Some(OsString::from_vec(b"/a\xff".to_vec())), Ok("/".into()));
        assert!(p.problem.unwrap().contains("UTF-8"));
        let gone = std::io::Error::from_raw_os_error(libc::ENOENT);
        let p = EnvPythonPath::resolve(Some("/usr:lib".into()), Err(gone));
        assert_eq!(p.paths, [PathBuf::from("/usr")]);
        assert!(p.problem.unwrap().contains("\"lib\""));
    }
}
