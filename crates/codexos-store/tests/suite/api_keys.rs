use codexos_core::{Role, TenantSlug, now_millis};
use codexos_store::{NewApiKey, StoreError};
use pretty_assertions::assert_eq;

use super::fresh_store;

fn key(name: &str, role: Role, expires_at: Option<i64>) -> NewApiKey {
    NewApiKey { name: name.to_owned(), role, user: None, expires_at }
}

#[tokio::test]
async fn keys_authenticate_until_revoked_or_expired() {
    let (store, _database) = fresh_store().await;
    let tenant = store.create_tenant(&TenantSlug::parse("acme").unwrap(), "Acme").await.unwrap();
    let (ci, ci_secret) = store.create_api_key(tenant.id, &key("ci", Role::Developer, None)).await.unwrap();
    let (_, expired_secret) =
        store.create_api_key(tenant.id, &key("old", Role::Viewer, Some(now_millis() - 1))).await.unwrap();

    let principal = store.authenticate(ci_secret.expose()).await.unwrap().unwrap();
    assert_eq!(
        (principal.tenant, principal.credential, principal.role),
        (tenant.id, codexos_store::Credential::ApiKey(ci.id), Role::Developer)
    );
    assert_eq!(principal.tenant_slug.as_str(), "acme");
    assert!(ci_secret.expose().starts_with(&ci.prefix));

    assert_eq!(store.authenticate(expired_secret.expose()).await.unwrap(), None);
    let mut tampered = ci_secret.expose().to_owned();
    tampered.pop();
    tampered.push('!');
    assert_eq!(store.authenticate(&tampered).await.unwrap(), None);
    assert_eq!(store.authenticate("not-a-key").await.unwrap(), None);

    let revoked = store.revoke_api_key(tenant.id, ci.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.authenticate(ci_secret.expose()).await.unwrap(), None);
    // Revoking again keeps the first revocation time.
    assert_eq!(store.revoke_api_key(tenant.id, ci.id).await.unwrap().revoked_at, revoked.revoked_at);

    let listed = store.list_api_keys(tenant.id).await.unwrap();
    assert_eq!(listed.iter().map(|key| key.name.as_str()).collect::<Vec<_>>(), ["ci", "old"]);
}

#[tokio::test]
async fn another_tenants_key_is_not_found() {
    let (store, _database) = fresh_store().await;
    let acme = store.create_tenant(&TenantSlug::parse("acme").unwrap(), "Acme").await.unwrap();
    let globex = store.create_tenant(&TenantSlug::parse("globex").unwrap(), "Globex").await.unwrap();
    let (acme_key, acme_secret) = store.create_api_key(acme.id, &key("ci", Role::Admin, None)).await.unwrap();

    assert!(matches!(store.api_key(globex.id, acme_key.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.revoke_api_key(globex.id, acme_key.id).await, Err(StoreError::NotFound(_))));
    assert!(store.list_api_keys(globex.id).await.unwrap().is_empty());
    // Globex's attempt changed nothing.
    assert!(store.authenticate(acme_secret.expose()).await.unwrap().is_some());
}
