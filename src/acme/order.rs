//! One order, start to finish: publish every answer (HTTP-01 token or DNS-01 TXT record), wait
//! for DNS propagation, tell the CA, poll, finalize, download; then withdraw every answer,
//! whatever happened.
//!
//! Polling starts at 10 ms and backs off by 1.6x, honouring `Retry-After` (instant-acme does):
//! a local CA answers in a few tens of milliseconds instead of the seconds a fixed interval costs,
//! and a busy real CA is asked less and less often.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder,
    Order, OrderStatus, RetryPolicy,
};

use super::{AcmeClient, AcmeError, failed};
use crate::challenge::choice::{Choice, Method};
use crate::challenge::dns01::{Dns01, TxtRecord};
use crate::challenge::http01::{Publisher, Tokens};
use crate::challenge::tls_alpn01::{self, TlsAlpn01};
use crate::names::DomainName;

/// Polls from 10 ms, 1.6x longer each time, for at most `timeout` (`acme.order_timeout_secs`).
fn poll(timeout: Duration) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(10))
        .backoff(1.6)
        .timeout(timeout)
}

/// Polls from 1 ms, twice as long each time: once the CA is known to be at work (it fetched
/// the answers, or is signing the certificate), its verdict is a moment away; doubling keeps
/// a CA that takes longer (several vantage points) from being asked more than the usual
/// schedule would.
fn poll_soon(timeout: Duration) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(1))
        .backoff(2.0)
        .timeout(timeout)
}

/// Not in instant-acme's list of challenge types yet.
const DNS_PERSIST_01: &str = "dns-persist-01";

/// Orders beyond this many bad nonces in a row (each already retried by instant-acme) fail.
const ATTEMPTS: u32 = 3;

/// What answers challenges: the HTTP-01 listener's tokens, the TLS-ALPN-01 responder, and the
/// DNS-01 provider if any.
#[derive(Clone, Copy)]
pub struct Solvers<'a> {
    pub tokens: &'a Tokens,
    pub tls_alpn01: &'a TlsAlpn01,
    pub dns01: Option<&'a Dns01>,
    /// Write HTTP-01 answers here instead of serving them (another server holds port 80).
    pub webroot: Option<&'a std::path::Path>,
}

/// The answers published for one order, withdrawn at its end.
struct Published<'a> {
    http01: Publisher,
    /// Bound on the first TLS-ALPN-01 answer; releases port 443 when dropped.
    tls_alpn01: Option<tls_alpn01::Publisher>,
    responder: &'a TlsAlpn01,
    txt: Vec<TxtRecord>,
    dns01: Option<&'a Dns01>,
}

impl Published<'_> {
    async fn withdraw(self) {
        drop(self.http01);
        drop(self.tls_alpn01);
        if let Some(dns01) = self.dns01 {
            for record in &self.txt {
                if let Err(e) = dns01.cleanup(record).await {
                    tracing::warn!(error = %e, "could not remove a challenge TXT record; remove it by hand");
                }
            }
        }
    }
}

impl AcmeClient {
    /// Orders a certificate for `domains` with the CSR `csr_der`, answering each name's
    /// challenge as `choice` says. Returns the PEM chain, leaf first.
    /// `replaces`: the certificate this one renews (ARI); an order the CA refuses for naming
    /// it fails with an error whose [`AcmeError::refuses_replaces`] is true.
    pub async fn issue(
        &self,
        domains: &[DomainName],
        csr_der: &[u8],
        choice: &Choice,
        solvers: Solvers<'_>,
        replaces: Option<&CertificateIdentifier<'_>>,
        profile: Option<&str>,
    ) -> Result<String, AcmeError> {
        // instant-acme sends any profile; a CA that does not know it may ignore it silently.
        if let Some(profile) = profile {
            let account = self.account();
            let offered: Vec<&str> = account.profiles().map(|p| p.name).collect();
            if !offered.contains(&profile) {
                return Err(AcmeError::Profile {
                    profile: profile.to_string(),
                    offered: if offered.is_empty() {
                        "none".into()
                    } else {
                        offered.join(", ")
                    },
                });
            }
        }
        let mut attempt = 1;
        let mut replaced_account = false;
        loop {
            let mut published = Published {
                http01: solvers.tokens.publisher_for(solvers.webroot),
                tls_alpn01: None,
                responder: solvers.tls_alpn01,
                txt: Vec::new(),
                dns01: solvers.dns01,
            };
            let account = self.account();
            let result = self
                .issue_once(
                    &account,
                    domains,
                    csr_der,
                    choice,
                    replaces,
                    profile,
                    &mut published,
                )
                .await;
            published.withdraw().await;
            match result {
                Err(e) if attempt < ATTEMPTS && has_problem(&e, "badNonce") => {
                    tracing::debug!(attempt, "CA rejected our nonces repeatedly; ordering again");
                    attempt += 1;
                }
                // After a rollover cut short, the CA refuses the old key as it would any
                // stranger's: the account is as good as lost.
                Err(e)
                    if !replaced_account
                        && (has_problem(&e, "accountDoesNotExist")
                            || (self.rollover_interrupted()
                                && (has_problem(&e, "unauthorized")
                                    || has_problem(&e, "malformed")))) =>
                {
                    self.replace_account(&account).await?;
                    replaced_account = true;
                }
                result => return result.map_err(|e| self.with_retry_after(e)),
            }
        }
    }

    /// A rate-limit refusal, with the `Retry-After` the CA sent along.
    fn with_retry_after(&self, error: AcmeError) -> AcmeError {
        match error {
            AcmeError::Refused {
                step,
                source,
                retry_after: None,
            } if matches!(&source, instant_acme::Error::Api(p)
                if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited")) =>
            {
                AcmeError::Refused {
                    step,
                    source,
                    retry_after: self.http.recent_retry_after(),
                }
            }
            error => error,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn issue_once(
        &self,
        account: &Account,
        domains: &[DomainName],
        csr_der: &[u8],
        choice: &Choice,
        replaces: Option<&CertificateIdentifier<'_>>,
        profile: Option<&str>,
        published: &mut Published<'_>,
    ) -> Result<String, AcmeError> {
        let identifiers: Vec<Identifier> = domains
            .iter()
            .map(|d| match d.ip() {
                Some(ip) => Identifier::Ip(ip),
                None => Identifier::Dns(d.as_str().to_string()),
            })
            .collect();
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(replaces) = replaces {
            new_order = new_order.replaces(replaces.clone());
        }
        if let Some(profile) = profile {
            new_order = new_order.profile(profile);
        }
        let mut order = account
            .new_order(&new_order)
            .await
            .map_err(failed("create the order"))?;

        // HTTP-01 and TLS-ALPN-01 answers are live once published: the CA is told at once.
        // With DNS-01, first every answer is published, then (once DNS has caught up) the CA
        // is told: a CA that looks too early fails the authorization for good.
        let through_dns = choice.methods.iter().any(|(_, m)| *m == Method::Dns01);
        publish_answers(&mut order, choice, published, !through_dns).await?;
        if !through_dns {
            let answered = published.http01.answered();
            return self
                .complete(account, order, choice, csr_der, answered)
                .await;
        }
        if let Some(dns01) = published.dns01.filter(|_| !published.txt.is_empty()) {
            dns01.wait_until_visible(&published.txt).await?;
        }
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(failed("fetch an authorization"))?;
            if authorization.status != AuthorizationStatus::Pending {
                continue;
            }
            let name = authorization.identifier().to_string();
            let kind = challenge_type(choice.method(&name).unwrap_or(Method::Http01));
            if let Some(mut challenge) = authorization.challenge(kind) {
                challenge
                    .set_ready()
                    .await
                    .map_err(failed("start the validation"))?;
            }
        }

        let answered = published.http01.answered();
        self.complete(account, order, choice, csr_der, answered)
            .await
    }

    /// Waits for the validation, finalizes and downloads the chain. `answered` resolves when
    /// the CA has fetched every HTTP-01 answer from the listener (when it would tell).
    async fn complete(
        &self,
        account: &Account,
        mut order: Order,
        choice: &Choice,
        csr_der: &[u8],
        answered: Option<impl Future<Output = ()>>,
    ) -> Result<String, AcmeError> {
        // A rejected nonce is retried on this order from here on: ordering afresh after the CA
        // issued at finalization would issue a second certificate (and spend the CA's
        // duplicate-certificate limit).
        let mut retries = ATTEMPTS - 1;
        let mut retry = |e: AcmeError| match retries > 0 && has_problem(&e, "badNonce") {
            true => {
                retries -= 1;
                Ok(())
            }
            false => Err(e),
        };
        // Polled on the usual schedule, unless the listener sees the CA fetch every answer
        // first: its verdict is then moments away, so the next looks come sooner.
        let (usual, soon) = (
            poll(self.config.order_timeout),
            poll_soon(self.config.order_timeout),
        );
        let mut first = match answered {
            Some(answered) => tokio::select! {
                biased;
                status = order.poll_ready(&usual) => Some(status),
                () = answered => None,
            },
            None => Some(order.poll_ready(&usual).await),
        };
        let policy = if first.is_some() { &usual } else { &soon };
        let status = loop {
            let polled = match first.take() {
                Some(polled) => polled,
                None => order.poll_ready(policy).await,
            };
            match polled {
                Ok(status) => break status,
                // instant-acme reports an order that carries a problem as an error: the
                // order failed. Any other problem is the CA's answer to the request.
                Err(_) if order.state().error.is_some() => break OrderStatus::Invalid,
                Err(e) => retry(failed("complete the validation")(e))?,
            }
        };
        if status == OrderStatus::Invalid {
            let problem = order.state().error.clone();
            return Err(explain_invalid(&mut order, choice, problem).await);
        }

        while let Err(e) = order.finalize_csr(csr_der).await {
            retry(failed("finalize the order")(e))?;
        }
        // A CA that issues at once (Let's Encrypt mostly does) answers the finalization with
        // a valid order: the chain is then fetched without a wait.
        let chain = loop {
            let fetched = match order.certificate().await {
                Ok(Some(chain)) => Ok(chain),
                Ok(None) => order.poll_certificate(&soon).await,
                Err(e) => Err(e),
            };
            match fetched {
                Ok(chain) => break chain,
                Err(e) => retry(failed("issue the certificate")(e))?,
            }
        };
        let url = order.state().certificate.clone().unwrap_or_default();
        Ok(match (&self.downloads, &self.config.preferred_chain) {
            (Some(downloads), Some(preferred)) => {
                super::chains::choose(account, downloads, &url, chain, preferred).await
            }
            _ => chain,
        })
    }
}

fn challenge_type(method: Method) -> ChallengeType {
    match method {
        Method::Http01 => ChallengeType::Http01,
        Method::TlsAlpn01 => ChallengeType::TlsAlpn01,
        Method::Dns01 => ChallengeType::Dns01,
        Method::DnsPersist01 => ChallengeType::Unknown(DNS_PERSIST_01.to_string()),
    }
}

/// Publishes the answer of every pending authorization, and tells the CA it is ready when
/// `ready` is set.
async fn publish_answers(
    order: &mut Order,
    choice: &Choice,
    published: &mut Published<'_>,
    ready: bool,
) -> Result<(), AcmeError> {
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
        let method = choice.method(&name).unwrap_or(Method::Http01);
        let no_challenge = || AcmeError::NoChallenge {
            name: name.clone(),
            method: method.as_str(),
        };
        let mut challenge = authorization
            .challenge(challenge_type(method))
            .ok_or_else(no_challenge)?;
        match method {
            Method::Http01 => {
                published
                    .http01
                    .publish(&challenge.token, challenge.key_authorization().as_str())
                    .await?
            }
            Method::TlsAlpn01 => {
                let responder = published.responder;
                let publisher = match &mut published.tls_alpn01 {
                    Some(publisher) => publisher,
                    None => published.tls_alpn01.insert(responder.publisher()?),
                };
                publisher.publish(&name, challenge.key_authorization().digest().as_ref())?;
            }
            Method::Dns01 => {
                let dns01 = published
                    .dns01
                    .ok_or_else(|| AcmeError::NoDns01Provider(name.clone()))?;
                let record = TxtRecord {
                    fqdn: dns01.record_name(&name).await,
                    value: challenge.key_authorization().dns_value(),
                };
                // Remember it before publishing, so a half-done update is cleaned up too.
                published.txt.push(record.clone());
                dns01.present(&record).await?;
            }
            // The operator's record is already there: nothing to publish.
            Method::DnsPersist01 => {}
        }
        if ready {
            challenge
                .set_ready()
                .await
                .map_err(failed("start the validation"))?;
        }
    }
    Ok(())
}

/// Finds which name failed validation and what the CA saw; `problem` is what the CA said
/// about the order as a whole, the answer when no authorization names a failure.
async fn explain_invalid(
    order: &mut Order,
    choice: &Choice,
    problem: Option<instant_acme::Problem>,
) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        // Only an invalid authorization failed; a pending one was cut short by the order.
        if state.status != AuthorizationStatus::Invalid {
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
        let method = choice.method(&name).unwrap_or(Method::Http01);
        return AcmeError::Validation {
            name,
            method,
            detail,
        };
    }
    AcmeError::Validation {
        name: "a name of the order".into(),
        method: Method::Http01,
        detail: match problem {
            Some(problem) => format!("the CA gave the order up: {problem}"),
            None => "the order became invalid and the CA named no reason".into(),
        },
    }
}

/// Whether the CA answered with the ACME problem `urn:ietf:params:acme:error:{kind}`.
pub(super) fn has_problem(error: &AcmeError, kind: &str) -> bool {
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

impl AcmeError {
    /// Whether an order that named the certificate it replaces may go through without:
    /// `alreadyReplaced`, a malformed or unknown `replaces`, a CA that fails to look the old
    /// certificate up (pebble 2.10 now and then answers serverInternal), or one that cannot
    /// take it at all all refuse the order before any validation. A rate limit is no such
    /// refusal: asking again at once would only be refused again.
    pub fn refuses_replaces(&self) -> bool {
        let refused = matches!(
            self,
            AcmeError::Refused {
                step: "create the order",
                ..
            }
        );
        is_unsupported(self) || (refused && !has_problem(self, "rateLimited"))
    }

    /// The CA failed on its side (`serverInternal`): nothing it said about the request.
    pub fn is_server_fault(&self) -> bool {
        has_problem(self, "serverInternal")
    }
}

/// The CA cannot take `replaces`: no ARI at all, or an order that came back without it
/// (instant-acme checks the echo; acme2certifier, for one, does not echo it).
fn is_unsupported(error: &AcmeError) -> bool {
    match error {
        AcmeError::Unsupported { .. } => true,
        AcmeError::Refused { source, .. } | AcmeError::Unreachable { source, .. } => {
            source.to_string().contains("replaces field mismatch")
        }
        _ => false,
    }
}
