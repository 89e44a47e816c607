//! The config loader: `Config::load` on a file holding the input, in a directory of
//! its own (relative paths resolve there). Refusals are fine; a panic is not, and a
//! config that loads names only plugins and methods that could be called.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use upm::config::Config;

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // UPM_LOG_FILE would override the audit path a config names.
        std::env::remove_var("UPM_LOG_FILE");
        upm_fuzz::scratch_dir("config").join("upm_config.json")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = config_path();
    std::fs::write(path, data).expect("write the config");
    if let Ok(config) = Config::load(path) {
        // No plugin at all is a valid config that refuses every call.
        for (name, plugin) in &config.plugins {
            assert!(upm::request::valid_name(name), "{name:?}");
            assert!(!plugin.methods.is_empty(), "{name}");
            for method in plugin.methods.keys() {
                assert!(upm::request::valid_name(method) && !method.starts_with('_'));
            }
        }
    }
});
