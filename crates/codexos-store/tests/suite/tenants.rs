use codexos_core::TenantSlug;
use codexos_store::StoreError;

use super::fresh_store;

#[tokio::test]
async fn bootstrap_happens_once() {
    let (store, _database) = fresh_store().await;
    let first = store.bootstrap().await.unwrap().expect("first start bootstraps");
    assert_eq!(first.tenant.slug.as_str(), "default");
    assert!(first.owner_key.expose().starts_with("cxo_"));
    assert!(store.bootstrap().await.unwrap().is_none());
    assert_eq!(store.count_tenants().await.unwrap(), 1);

    let principal = store.authenticate(first.owner_key.expose()).await.unwrap().expect("owner key works");
    assert_eq!(principal.tenant, first.tenant.id);
    assert_eq!(principal.role, codexos_core::Role::Owner);
    assert!(principal.user.is_some());
}

/// Regression: on SQLite a bootstrap that read before writing failed with
/// "database is locked" (SQLITE_BUSY_SNAPSHOT) when the worker registered at
/// the same moment; write transactions now take the lock up front.
#[tokio::test]
async fn concurrent_bootstraps_make_one_tenant_and_none_fails() {
    let (store, _database) = fresh_store().await;
    let mut attempts = Vec::new();
    for n in 0..4 {
        let store = store.clone();
        attempts.push(tokio::spawn(async move {
            store.register_worker(&format!("host-{n}"), n).await.unwrap();
            store.bootstrap().await
        }));
    }
    let mut created = 0;
    for attempt in attempts {
        if attempt.await.unwrap().unwrap().is_some() {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.count_tenants().await.unwrap(), 1);
}

#[tokio::test]
async fn tenant_slugs_are_unique() {
    let (store, _database) = fresh_store().await;
    let slug = TenantSlug::parse("acme").unwrap();
    let acme = store.create_tenant(&slug, "Acme").await.unwrap();
    assert_eq!(store.tenant(acme.id).await.unwrap(), acme);
    let err = store.create_tenant(&slug, "Acme again").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let missing = store.tenant(codexos_core::TenantId::new()).await.unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing}");
}
