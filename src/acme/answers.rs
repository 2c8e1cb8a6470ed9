//! Every reading certkeeper makes of a CA's answers besides instant-acme's own, behind one entry
//! point for the `acme_json` fuzz target: problem documents (the hint chosen by type, the retry
//! time read from the detail), authorizations (each challenge's token, which may become a file
//! name), orders, renewal information, and `Link` headers of certificate downloads.

/// Reads `bytes` as each kind of CA answer certkeeper acts on; returns how many kinds it was.
/// Any input: never a panic.
pub fn read_ca_answer(bytes: &[u8]) -> usize {
    let mut kinds = 0;
    if let Ok(problem) = serde_json::from_slice::<instant_acme::Problem>(bytes) {
        let refused = super::AcmeError::Refused {
            step: "read a problem document",
            source: instant_acme::Error::Api(problem),
            retry_after: None,
        };
        let _ = refused.to_string();
        let _ = super::retry_after(&refused);
        kinds += 1;
    }
    if let Ok(authorization) = serde_json::from_slice::<instant_acme::AuthorizationState>(bytes) {
        for challenge in &authorization.challenges {
            let _ = crate::challenge::http01::is_token(&challenge.token);
        }
        kinds += 1;
    }
    if serde_json::from_slice::<instant_acme::OrderState>(bytes).is_ok() {
        kinds += 1;
    }
    if serde_json::from_slice::<instant_acme::RenewalInfo>(bytes).is_ok() {
        kinds += 1;
    }
    if let Ok(link) = http::HeaderValue::from_bytes(bytes) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::LINK, link);
        let _ = super::http::alternate_links(&headers, "https://ca.example/cert/1");
        kinds += 1;
    }
    kinds
}
