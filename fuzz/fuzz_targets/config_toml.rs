//! Fuzz target: the TOML config loader, through the public
//! `config::load` exactly as `shardcache --config FILE` runs it (the input
//! is written to a file on tmpfs: no entry point takes the text itself),
//! plus the `parse_size` / `parse_duration` value parsers on the raw text.
//!
//! Checks: no panic, whatever the file holds (invalid UTF-8 or TOML,
//! unknown keys, wrong types, huge or negative sizes and durations,
//! malformed groups); a value `parse_size` accepts is one it prints back
//! the same way it reads (no overflow).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcache::config::{self, parse_duration, parse_size};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One file per process, rewritten for every input (libFuzzer runs one
/// input at a time per process).
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!(
            "shardcache-fuzz-config-{}.toml",
            std::process::id()
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(n) = parse_size(text) {
            // Bytes, read back as a plain number, are the same bytes.
            assert_eq!(parse_size(&n.to_string()), Ok(n), "parse_size({text:?})");
        }
        let _ = parse_duration(text);
    }
    let file = path();
    std::fs::write(file, data).expect("write the config file");
    let argv: Vec<OsString> = vec!["shardcache".into(), "--config".into(), file.into()];
    let _ = config::load(argv, std::iter::empty());
});
