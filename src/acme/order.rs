//! One ACME order with instant-acme: account (created once, then from the
//! cache), the challenges answered through the tables in `tls::acme` (and,
//! in a cluster, published in the shared store for the other instances), a
//! CSR with a fresh key, and the issued chain.

use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::cache::{self, StoredCertificate};
use super::challenge::alpn_certificate;
use super::{AcmeError, PendingChallenge, SharedStore, CHALLENGE_TTL};
use crate::config::model::{AcmeChallenge, AcmeSettings};
use crate::tls::acme as tables;

/// The account for the settings' directory: restored from the cache, or
/// created (terms of service agreed) and written to the cache 0600.
pub async fn account(settings: &AcmeSettings) -> Result<Account, AcmeError> {
    let builder = || match &settings.directory_ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    let path = cache::account_path(&settings.cache, &settings.directory);
    if let Some(text) = cache::read(&path)? {
        let credentials: AccountCredentials =
            serde_json::from_str(&text).map_err(|err| AcmeError::Certificate(format!("{}: {err}", path.display())))?;
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await?;
    let text = serde_json::to_string(&credentials).map_err(|err| AcmeError::Certificate(err.to_string()))?;
    cache::write(&path, &text)?;
    Ok(account)
}

/// Withdraws the challenge answers of an order when it ends, however it ends.
#[derive(Default)]
struct Offered {
    domains: Vec<String>,
    tokens: Vec<String>,
}

impl Drop for Offered {
    fn drop(&mut self) {
        self.domains.iter().for_each(|d| tables::withdraw_alpn_challenge(d));
        self.tokens.iter().for_each(|t| tables::withdraw_http_challenge(t));
    }
}

/// Orders a certificate for the settings' domains and waits for it; with
/// `shared` (a cluster), each challenge answer is published there until the
/// validation is over, whichever instance the CA reaches.
pub async fn issue(
    account: &Account,
    settings: &AcmeSettings,
    shared: Option<&dyn SharedStore>,
) -> Result<StoredCertificate, AcmeError> {
    let identifiers: Vec<Identifier> = settings.domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut offered = Offered::default();
    let mut published = Vec::new();
    let validated = validate(&mut order, settings, shared, &mut offered, &mut published).await;
    if let Some(shared) = shared {
        for challenge in &published {
            shared.withdraw_challenge(challenge).await;
        }
    }
    drop(offered);
    validated?;
    let retries = retry_policy();
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&retries).await?;
    Ok(StoredCertificate { chain_pem, key_pem })
}

fn retry_policy() -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(Duration::from_secs(90))
}

/// Answers each pending authorization's challenge (here, and in `shared`)
/// and waits until the order is ready.
async fn validate(
    order: &mut instant_acme::Order,
    settings: &AcmeSettings,
    shared: Option<&dyn SharedStore>,
    offered: &mut Offered,
    published: &mut Vec<PendingChallenge>,
) -> Result<(), AcmeError> {
    let kind = match settings.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(AcmeError::Refused(format!("authorization is {other:?}"))),
        }
        let mut challenge = authorization
            .challenge(kind.clone())
            .ok_or_else(|| AcmeError::Refused(format!("the CA offers no {kind:?} challenge")))?;
        let domain = challenge.identifier().to_string();
        let key_authorization = challenge.key_authorization();
        let pending = match settings.challenge {
            AcmeChallenge::TlsAlpn01 => {
                tables::offer_alpn_challenge(&domain, alpn_certificate(&domain, key_authorization.digest().as_ref())?);
                offered.domains.push(domain.clone());
                PendingChallenge::TlsAlpn01(domain.to_ascii_lowercase())
            }
            AcmeChallenge::Http01 => {
                tables::offer_http_challenge(&challenge.token, key_authorization.as_str());
                offered.tokens.push(challenge.token.clone());
                PendingChallenge::Http01(challenge.token.clone())
            }
        };
        if let Some(shared) = shared {
            // Published before the CA is told to validate.
            shared
                .offer_challenge(&pending, key_authorization.as_str(), CHALLENGE_TTL)
                .await;
            published.push(pending);
        }
        challenge.set_ready().await?;
    }
    match order.poll_ready(&retry_policy()).await? {
        OrderStatus::Ready => Ok(()),
        other => Err(AcmeError::Refused(format!("order is {other:?} after the challenges"))),
    }
}
