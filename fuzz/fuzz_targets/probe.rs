//! The probe server's request query: any input, never a panic; what it accepts is a DNS name
//! that parses to itself and tokens of the base64url alphabet only.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|query: &str| {
    if let Some((name, token, expected)) = certkeeper::preflight::remote::server::parse_query(query) {
        let parsed = certkeeper::names::DomainName::parse(&name).expect("an accepted name parses");
        assert_eq!(parsed.as_str(), name);
        for value in [&token, &expected] {
            assert!(!value.is_empty() && value.len() <= 128);
            assert!(
                value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
    }
});
