//! PEM parsing and every pre-deployment check: any chain and key text gives a verdict, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (chain, key) = input;
    let _ = certkeeper::deploy::bundle::read_leaf(chain.as_bytes());
    if let Ok(bundle) = certkeeper::deploy::bundle::Bundle::from_pem(chain, key) {
        let domains =
            [certkeeper::names::DomainName::parse("media.example.com").expect("valid name")];
        let _ = bundle.check(&domains, std::time::SystemTime::now());
        let _ = bundle.fullchain_pem();
    }
});
