//! The control socket's request parser: any line a client sends, never a panic; a request that
//! parses survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    if let Ok(request) = certkeeper::daemon::control::parse_request(line) {
        let text = serde_json::to_string(&request).expect("a request serializes");
        let again = certkeeper::daemon::control::parse_request(&text).expect("and parses again");
        assert_eq!(again, request);
    }
});
