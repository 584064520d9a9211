use codexos_store::{Backend, Store};

use super::fresh_store;

#[tokio::test]
async fn connects_to_the_selected_backend_and_migrates_once() {
    let (store, database) = fresh_store().await;
    let expected = if database.is_postgres() { Backend::Postgres } else { Backend::Sqlite };
    assert_eq!(store.backend(), expected);
    store.ping().await.unwrap();
    store.close().await;

    // A second start finds the schema in place and changes nothing.
    let again = Store::connect(database.url()).await.unwrap();
    let report = Store::inspect(database.url()).await.unwrap();
    assert!(report.reachable, "{report:?}");
    assert_eq!(report.schema_version, Some(report.latest_version));
    again.close().await;
}

#[tokio::test]
async fn inspect_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never.db");
    let url = format!("sqlite://{}", path.display());
    let report = Store::inspect(&url).await.unwrap();
    assert!(!report.exists && !report.reachable);
    assert!(!path.exists(), "inspect must not create the database");
}

#[tokio::test]
async fn a_corrupt_sqlite_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.db");
    std::fs::write(&path, "this is not a database, it is a text file ".repeat(200)).unwrap();
    let err = Store::connect(&format!("sqlite://{}", path.display())).await.unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot open the database sqlite://{}", path.display())), "{err}");
    assert!(err.contains("not a database"), "{err}");
}

#[tokio::test]
async fn an_unreachable_postgres_is_named_without_its_password() {
    let err = Store::connect("postgres://app:hunter2@127.0.0.1:1/codexos").await.unwrap_err().to_string();
    assert!(err.starts_with("cannot open the database postgres://app:redacted@127.0.0.1:1/codexos"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
