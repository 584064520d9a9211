use codexos_core::SecretName;
use codexos_store::{SealedSecret, StoreError, StoredDataKey};
use pretty_assertions::assert_eq;

use super::{fresh_store, tenant};

fn name(text: &str) -> SecretName {
    SecretName::parse(text).unwrap()
}

/// Bytes of every value, NUL and high bytes included: BLOB and BYTEA both
/// keep them exactly.
fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn data_key(master_key_id: &str, seed: u8) -> StoredDataKey {
    StoredDataKey {
        version: 1,
        master_key_id: master_key_id.to_owned(),
        nonce: bytes(seed, 12),
        wrapped_key: bytes(seed, 48),
    }
}

fn sealed(seed: u8) -> SealedSecret {
    SealedSecret { nonce: bytes(seed, 12), ciphertext: bytes(seed, 300), key_version: 1 }
}

#[tokio::test]
async fn data_keys_are_stored_once_per_tenant() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    assert_eq!(store.data_key(acme).await.unwrap(), None);
    let first = store.insert_data_key(acme, &data_key("aaaa", 1)).await.unwrap();
    assert_eq!(first, data_key("aaaa", 1));
    // A second process that raced to make one gets the stored one back.
    let second = store.insert_data_key(acme, &data_key("aaaa", 2)).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(store.data_key(acme).await.unwrap(), Some(first));
    let globex = tenant(&store, "globex").await;
    assert_eq!(store.data_key(globex).await.unwrap(), None);
    let unknown = codexos_core::TenantId::new();
    assert!(matches!(store.insert_data_key(unknown, &data_key("aaaa", 3)).await, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn secrets_are_created_replaced_listed_and_deleted() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    store.insert_data_key(acme, &data_key("aaaa", 1)).await.unwrap();

    let (info, created) = store.put_secret(acme, &name("GH_TOKEN"), &sealed(1)).await.unwrap();
    assert!(created);
    assert_eq!(info.name.as_str(), "GH_TOKEN");
    assert_eq!(info.created_at, info.updated_at);
    let (replaced, created) = store.put_secret(acme, &name("GH_TOKEN"), &sealed(2)).await.unwrap();
    assert!(!created);
    assert_eq!(replaced.created_at, info.created_at);
    store.put_secret(acme, &name("API_KEY"), &sealed(3)).await.unwrap();
    store.put_secret(acme, &name("b_lower"), &sealed(4)).await.unwrap();

    // Listed by name, byte-wise on both backends.
    let names: Vec<String> =
        store.list_secrets(acme).await.unwrap().into_iter().map(|info| info.name.to_string()).collect();
    assert_eq!(names, ["API_KEY", "GH_TOKEN", "b_lower"]);
    let (_, stored) = store.sealed_secret(acme, &name("GH_TOKEN")).await.unwrap().unwrap();
    assert_eq!(stored, sealed(2));
    assert_eq!(store.sealed_secret(acme, &name("NOPE")).await.unwrap(), None);

    store.delete_secret(acme, &name("GH_TOKEN")).await.unwrap();
    assert!(matches!(store.delete_secret(acme, &name("GH_TOKEN")).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.sealed_secret(acme, &name("GH_TOKEN")).await.unwrap(), None);
}

#[tokio::test]
async fn another_tenants_secrets_are_not_found() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    store.put_secret(acme, &name("TOKEN"), &sealed(1)).await.unwrap();

    assert!(store.list_secrets(globex).await.unwrap().is_empty());
    assert_eq!(store.sealed_secret(globex, &name("TOKEN")).await.unwrap(), None);
    assert!(matches!(store.delete_secret(globex, &name("TOKEN")).await, Err(StoreError::NotFound(_))));
    // Globex setting its own TOKEN leaves Acme's alone.
    let (_, created) = store.put_secret(globex, &name("TOKEN"), &sealed(9)).await.unwrap();
    assert!(created);
    assert_eq!(store.sealed_secret(acme, &name("TOKEN")).await.unwrap().unwrap().1, sealed(1));
}

#[tokio::test]
async fn rotation_rewraps_every_data_key_or_none() {
    let (store, _database) = fresh_store().await;
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    store.insert_data_key(acme, &data_key("old", 1)).await.unwrap();
    store.insert_data_key(globex, &data_key("old", 2)).await.unwrap();
    store.put_secret(acme, &name("TOKEN"), &sealed(1)).await.unwrap();
    assert_eq!(store.master_keys_in_use().await.unwrap(), vec![("old".to_owned(), 2)]);

    // A re-wrap that fails for one tenant changes nothing for any.
    let failed = store
        .rewrap_data_keys(|tenant, key| {
            if tenant == globex {
                Err("cannot unwrap")
            } else {
                Ok(StoredDataKey { master_key_id: "new".into(), ..key.clone() })
            }
        })
        .await
        .unwrap();
    assert_eq!(failed, Err("cannot unwrap"));
    assert_eq!(store.master_keys_in_use().await.unwrap(), vec![("old".to_owned(), 2)]);

    let done = store
        .rewrap_data_keys(|_, key| {
            Ok::<_, ()>(StoredDataKey { master_key_id: "new".into(), wrapped_key: bytes(7, 48), ..key.clone() })
        })
        .await
        .unwrap();
    assert_eq!(done, Ok(2));
    assert_eq!(store.master_keys_in_use().await.unwrap(), vec![("new".to_owned(), 2)]);
    assert_eq!(store.data_key(acme).await.unwrap().unwrap().wrapped_key, bytes(7, 48));
    // The secrets themselves are untouched.
    assert_eq!(store.sealed_secret(acme, &name("TOKEN")).await.unwrap().unwrap().1, sealed(1));
}
