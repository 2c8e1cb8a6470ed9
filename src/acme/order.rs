//! One order, start to finish: publish HTTP-01 answers, tell the CA, poll, finalize, download.
//!
//! Polling starts at 10 ms and backs off by 1.6x, honouring `Retry-After` (instant-acme does):
//! a local CA answers in a few tens of milliseconds instead of the seconds a fixed interval costs,
//! and a busy real CA is asked less and less often.

use std::time::Duration;

use instant_acme::{
    AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus, RetryPolicy,
};

use super::{AcmeClient, AcmeError, failed};
use crate::challenge::http01::Tokens;
use crate::names::DomainName;

const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(10))
    .backoff(1.6)
    .timeout(Duration::from_secs(120));

/// Orders beyond this many bad nonces in a row (each already retried by instant-acme) fail.
const ATTEMPTS: u32 = 3;

impl AcmeClient {
    /// Orders a certificate for `domains` with the CSR `csr_der`, answering HTTP-01 challenges
    /// through `tokens`. Returns the PEM chain, leaf first.
    pub async fn issue(
        &mut self,
        domains: &[DomainName],
        csr_der: &[u8],
        tokens: &Tokens,
    ) -> Result<String, AcmeError> {
        let mut attempt = 1;
        let mut replaced_account = false;
        loop {
            match self.issue_once(domains, csr_der, tokens).await {
                Err(e) if attempt < ATTEMPTS && has_problem(&e, "badNonce") => {
                    tracing::debug!(attempt, "CA rejected our nonces repeatedly; ordering again");
                    attempt += 1;
                }
                Err(e) if !replaced_account && has_problem(&e, "accountDoesNotExist") => {
                    self.replace_account().await?;
                    replaced_account = true;
                }
                result => return result,
            }
        }
    }

    async fn issue_once(
        &self,
        domains: &[DomainName],
        csr_der: &[u8],
        tokens: &Tokens,
    ) -> Result<String, AcmeError> {
        let identifiers: Vec<Identifier> = domains
            .iter()
            .map(|d| Identifier::Dns(d.as_str().to_string()))
            .collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(failed("create the order"))?;

        // The answers stay published until this guard drops, whatever happens below.
        let mut published = tokens.publisher();
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(failed("fetch an authorization"))?;
            let name = authorization.identifier().to_string();
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                status => {
                    return Err(AcmeError::Authorization {
                        name,
                        status: format!("{status:?}").to_lowercase(),
                    });
                }
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::NoHttp01(name.clone()))?;
            published.publish(&challenge.token, challenge.key_authorization().as_str());
            challenge
                .set_ready()
                .await
                .map_err(failed("start the http-01 validation"))?;
        }

        // An order whose validation failed comes back as an order-level problem: find out
        // which name failed and what the CA saw.
        let status = match order.poll_ready(&POLL).await {
            Ok(status) => status,
            Err(instant_acme::Error::Api(_)) => OrderStatus::Invalid,
            Err(e) => return Err(failed("complete the validation")(e)),
        };
        if status == OrderStatus::Invalid {
            return Err(explain_invalid(&mut order).await);
        }
        drop(published);

        order
            .finalize_csr(csr_der)
            .await
            .map_err(failed("finalize the order"))?;
        order
            .poll_certificate(&POLL)
            .await
            .map_err(failed("issue the certificate"))
    }
}

/// Finds which name failed validation and what the CA saw.
async fn explain_invalid(order: &mut Order) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        if state.status == AuthorizationStatus::Valid {
            continue;
        }
        let name = state.identifier().to_string();
        let detail = state
            .challenges
            .iter()
            .find_map(|c| c.error.as_ref())
            .map(|problem| {
                problem
                    .detail
                    .clone()
                    .unwrap_or_else(|| problem.to_string())
            })
            .unwrap_or_else(|| "the CA gave no reason".into());
        return AcmeError::Validation { name, detail };
    }
    AcmeError::Validation {
        name: "a name of the order".into(),
        detail: "the order became invalid".into(),
    }
}

/// Whether the CA answered with the ACME problem `urn:ietf:params:acme:error:{kind}`.
fn has_problem(error: &AcmeError, kind: &str) -> bool {
    let AcmeError::Refused {
        source: instant_acme::Error::Api(problem),
        ..
    } = error
    else {
        return false;
    };
    problem
        .r#type
        .as_deref()
        .and_then(|t| t.strip_prefix("urn:ietf:params:acme:error:"))
        == Some(kind)
}
