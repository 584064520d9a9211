//! Single sign-on's storage: a tenant's provider, logins under way taken
//! once, and members provisioned on their first login.

use codexos_core::{Role, SecretName, TenantSlug};
use codexos_store::{Entity, NewOidcLogin, OidcClientSecret, SealedSecret, StoreError, TenantOidc};
use pretty_assertions::assert_eq;

use super::{fresh_store, tenant};

fn config(issuer: &str, client_secret: OidcClientSecret) -> TenantOidc {
    TenantOidc {
        issuer: issuer.to_owned(),
        client_id: "codexos".to_owned(),
        client_secret,
        default_role: Role::Developer,
        allowed_domains: vec!["acme.test".to_owned()],
        scopes: vec!["openid".to_owned(), "email".to_owned()],
        created_at: 0,
        updated_at: 0,
    }
}

fn login<'a>(state: &'a str, ttl_ms: i64) -> NewOidcLogin<'a> {
    NewOidcLogin { state, nonce: "nonce-1", pkce_verifier: "verifier-1", redirect_after: "/agents", ttl_ms }
}

#[tokio::test]
async fn a_tenants_provider_is_set_replaced_found_by_slug_and_removed() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    assert_eq!(store.tenant_oidc(acme).await.unwrap(), None);
    let sealed = OidcClientSecret::Sealed(SealedSecret { nonce: vec![1; 12], ciphertext: vec![2; 40], key_version: 1 });
    let stored = store.put_tenant_oidc(acme, &config("https://id.acme.test", sealed.clone())).await.unwrap();
    assert_eq!(stored.client_secret, sealed);
    assert_eq!(stored.allowed_domains, vec!["acme.test".to_owned()]);
    assert_eq!(stored.scopes, vec!["openid".to_owned(), "email".to_owned()]);
    assert!(stored.created_at > 0 && stored.updated_at >= stored.created_at);

    let by_name = OidcClientSecret::Secret(SecretName::parse("IDP_SECRET").unwrap());
    let replaced = store.put_tenant_oidc(acme, &config("https://id2.acme.test", by_name.clone())).await.unwrap();
    assert_eq!((replaced.issuer.as_str(), &replaced.client_secret), ("https://id2.acme.test", &by_name));
    assert_eq!(replaced.created_at, stored.created_at);
    let (found, found_config) = store.tenant_oidc_by_slug(&TenantSlug::parse("acme").unwrap()).await.unwrap().unwrap();
    assert_eq!((found, found_config), (acme, Some(replaced)));
    assert_eq!(store.tenant_oidc_by_slug(&TenantSlug::parse("globex").unwrap()).await.unwrap(), Some((globex, None)));
    assert_eq!(store.tenant_oidc_by_slug(&TenantSlug::parse("nowhere").unwrap()).await.unwrap(), None);
    // Another tenant's provider is its own.
    assert_eq!(store.tenant_oidc(globex).await.unwrap(), None);

    store.begin_oidc_login(acme, &login("state-a", 60_000)).await.unwrap();
    store.delete_tenant_oidc(acme).await.unwrap();
    assert_eq!(store.tenant_oidc(acme).await.unwrap(), None);
    // Logins under way went with it.
    assert_eq!(store.take_oidc_login("state-a").await.unwrap(), None);
    assert!(matches!(store.delete_tenant_oidc(acme).await, Err(StoreError::NotFound(Entity::SsoConfig))));
}

#[tokio::test]
async fn a_login_is_taken_once() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    store.begin_oidc_login(acme, &login("state-1", 60_000)).await.unwrap();
    store.begin_oidc_login(acme, &login("state-old", -1)).await.unwrap();
    let taken = store.take_oidc_login("state-1").await.unwrap().unwrap();
    assert_eq!(taken.tenant, acme);
    assert_eq!(
        (taken.nonce.as_str(), taken.pkce_verifier.as_str(), taken.redirect_after.as_str()),
        ("nonce-1", "verifier-1", "/agents")
    );
    assert!(taken.expires_at > codexos_core::now_millis());
    assert_eq!(store.take_oidc_login("state-1").await.unwrap(), None);
    assert_eq!(store.take_oidc_login("never-issued").await.unwrap(), None);
    // An expired login is answered (for the caller to refuse in its
    // tenant's name), once; the next login start sweeps the others.
    let expired = store.take_oidc_login("state-old").await.unwrap().unwrap();
    assert!(expired.expires_at <= codexos_core::now_millis());
    store.begin_oidc_login(acme, &login("state-old-2", -1)).await.unwrap();
    store.begin_oidc_login(acme, &login("state-2", 60_000)).await.unwrap();
    assert_eq!(store.take_oidc_login("state-old-2").await.unwrap(), None);
}

#[tokio::test]
async fn a_first_login_provisions_and_later_ones_find_the_member() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let (member, joined) = store.provision_sso_member(acme, "Alice@Acme.test", Role::Developer).await.unwrap();
    assert!(joined);
    assert_eq!((member.email.as_str(), member.role, member.has_password), ("alice@acme.test", Role::Developer, false));
    let (again, joined) = store.provision_sso_member(acme, "alice@acme.test", Role::Viewer).await.unwrap();
    assert!(!joined);
    assert_eq!(again, member);
    // The same user joins another tenant with that tenant's role.
    let (elsewhere, joined) = store.provision_sso_member(globex, "alice@acme.test", Role::Viewer).await.unwrap();
    assert!(joined);
    assert_eq!((elsewhere.user, elsewhere.role), (member.user, Role::Viewer));
    assert_eq!(store.member_by_email(acme, "nobody@acme.test").await.unwrap(), None);
}
