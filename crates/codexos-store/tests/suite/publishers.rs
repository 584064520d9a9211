use codexos_core::{PublisherKeyId, SignatureStatus};
use codexos_store::{Entity, NewPublisherKey, PublisherKey, StoreError};
use pretty_assertions::assert_eq;

use super::{fresh_store, new_version, tenant};

fn new_key(key_id: &str, name: &str, trusted: bool) -> NewPublisherKey {
    NewPublisherKey {
        key_id: PublisherKeyId::parse(key_id).unwrap(),
        name: name.to_owned(),
        public_key: format!("ed25519:key-of-{name}"),
        trusted,
        created_by: None,
    }
}

#[tokio::test]
async fn keys_are_registered_trusted_distrusted_and_revoked_for_good() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let own = store.create_publisher_key(acme, &new_key("00000000000000aa", "acme", true)).await.unwrap();
    assert_eq!(
        own,
        PublisherKey {
            key_id: PublisherKeyId::parse("00000000000000aa").unwrap(),
            name: "acme".to_owned(),
            public_key: "ed25519:key-of-acme".to_owned(),
            trusted: true,
            created_at: own.created_at,
            updated_at: own.created_at,
            revoked_at: None,
        }
    );
    let theirs = store.create_publisher_key(acme, &new_key("00000000000000bb", "globex", false)).await.unwrap();
    assert!(!theirs.trusted);
    assert_eq!(store.publisher_keys(acme).await.unwrap(), vec![own.clone(), theirs.clone()]);

    let err = store.create_publisher_key(acme, &new_key("00000000000000aa", "again", true)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Entity::PublisherKey)), "{err}");

    let trusted = store.set_publisher_trust(acme, &theirs.key_id, true).await.unwrap();
    assert!(trusted.trusted);
    assert_eq!(store.publisher_key(acme, &theirs.key_id).await.unwrap(), trusted);
    assert!(!store.set_publisher_trust(acme, &theirs.key_id, false).await.unwrap().trusted);

    let revoked = store.revoke_publisher_key(acme, &own.key_id).await.unwrap();
    assert!(revoked.revoked_at.is_some() && !revoked.trusted, "{revoked:?}");
    assert_eq!(store.revoke_publisher_key(acme, &own.key_id).await.unwrap(), revoked, "revoking twice");
    let err = store.set_publisher_trust(acme, &own.key_id, true).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState(_)), "{err}");
    let err = store.create_publisher_key(acme, &new_key("00000000000000aa", "acme", true)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(Entity::PublisherKey)), "a revoked key stays revoked: {err}");
}

#[tokio::test]
async fn another_tenants_keys_are_not_found_and_the_same_key_is_each_tenants_own() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    let key = store.create_publisher_key(acme, &new_key("00000000000000aa", "acme", true)).await.unwrap();
    assert_eq!(store.publisher_keys(globex).await.unwrap(), vec![]);
    for err in [
        store.publisher_key(globex, &key.key_id).await.unwrap_err(),
        store.set_publisher_trust(globex, &key.key_id, false).await.unwrap_err(),
        store.revoke_publisher_key(globex, &key.key_id).await.unwrap_err(),
    ] {
        assert!(matches!(err, StoreError::NotFound(Entity::PublisherKey)), "{err}");
    }
    assert!(store.publisher_key(acme, &key.key_id).await.unwrap().trusted, "unchanged");
    // Globex registers the same public key, untrusted: its own row.
    let theirs = store.create_publisher_key(globex, &new_key("00000000000000aa", "acme-inc", false)).await.unwrap();
    assert!(!theirs.trusted);
    assert!(store.publisher_key(acme, &key.key_id).await.unwrap().trusted);
}

#[tokio::test]
async fn a_version_records_its_signature_status_and_names_its_publisher() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let key = store.create_publisher_key(acme, &new_key("00000000000000aa", "acme-release", true)).await.unwrap();
    let mut signed = new_version("reviewer", "1.0.0");
    signed.signature_status = SignatureStatus::Verified;
    signed.publisher_key_id = Some(key.key_id.clone());
    let version = store.create_agent_version(acme, &signed).await.unwrap();
    assert_eq!(
        (version.signature_status, version.publisher_key_id.as_ref(), version.publisher_name.as_deref()),
        (SignatureStatus::Verified, Some(&key.key_id), Some("acme-release"))
    );
    assert_eq!(store.agent_version(acme, "reviewer", None).await.unwrap(), version);
    let unsigned = store.create_agent_version(acme, &new_version("reviewer", "2.0.0")).await.unwrap();
    assert_eq!((unsigned.signature_status, unsigned.publisher_name.as_deref()), (SignatureStatus::Unsigned, None));
    assert_eq!(store.list_agents(acme).await.unwrap()[0].latest, unsigned);
}
