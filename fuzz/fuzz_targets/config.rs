//! The config loader: any text gives a config or a located error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = certkeeper::config::Config::parse(std::path::Path::new("/fuzz/certkeeper.toml"), text);
});
