mod api_keys;
mod schema;
mod tenants;
mod workers;

use codexos_store::Store;
use codexos_test_support::TestDatabase;

/// A migrated store on a fresh database; keep the database alive as long as the store.
pub async fn fresh_store() -> (Store, TestDatabase) {
    let database = TestDatabase::create().await;
    let store = Store::connect(database.url()).await.expect("connect");
    (store, database)
}
