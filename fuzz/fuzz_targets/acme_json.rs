//! A CA's answers as certkeeper reads them (problem documents, authorizations and their
//! tokens, orders, renewal information, Link headers): any bytes, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = certkeeper::acme::read_ca_answer(bytes);
});
