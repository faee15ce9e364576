//! Arbitrary bytes as a TOML config: `Config::from_toml_str` never panics, and a config it
//! accepts is valid and runs a limiter (see `check_config`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_connlimit::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        tower_connlimit_fuzz::check_config(Config::from_toml_str(text));
    }
});
