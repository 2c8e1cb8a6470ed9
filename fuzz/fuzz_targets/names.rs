//! Domain-name normalization and coverage: any input, never a panic; a normalized name parses
//! to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (name, cert_name) = input;
    if let Ok(parsed) = certkeeper::names::DomainName::parse(name) {
        let again =
            certkeeper::names::DomainName::parse(parsed.as_str()).expect("normalized names parse");
        assert_eq!(again, parsed);
        let _ = parsed.is_covered_by(cert_name);
    }
});
