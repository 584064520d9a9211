//! Row-level security on PostgreSQL: the database keeps tenants apart even
//! for a query that forgets its tenant filter. (On SQLite the store's
//! filters are the whole defence; these tests then check nothing and say so.)

use codexos_store::{AuditOutcome, NewAuditEntry};
use sqlx::{AnyConnection, Connection, Executor, Row};

use super::{agent, fresh_store, queue, tenant};

/// A connection acting as the application role, as the store's pool does,
/// but free to run the unfiltered queries a buggy store function might.
async fn as_application(url: &str) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url).await.unwrap();
    conn.execute("SET ROLE codexos_app").await.unwrap();
    conn
}

#[tokio::test]
async fn every_tenant_table_is_forced_under_a_policy() {
    let (_store, database) = fresh_store().await;
    if !database.is_postgres() {
        eprintln!("skipping: row-level security is PostgreSQL's");
        return;
    }
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(database.url()).await.unwrap();
    let rows = conn
        .fetch_all(
            "SELECT c.relname::text AS name, c.relrowsecurity AS enabled, c.relforcerowsecurity AS forced, \
               (SELECT COUNT(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies, \
               (SELECT COUNT(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polqual IS NOT NULL \
                  AND p.polwithcheck IS NOT NULL) AS both_clauses \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND (c.relname IN ('tenants', 'users') OR EXISTS \
               (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))",
        )
        .await
        .unwrap();
    assert!(rows.len() >= 15, "expected every tenant table, found {}", rows.len());
    for row in rows {
        let name: String = row.get("name");
        assert!(row.get::<bool, _>("enabled") && row.get::<bool, _>("forced"), "{name}: row-level security not forced");
        assert!(row.get::<i64, _>("policies") >= 1, "{name}: no policy");
        assert_eq!(row.get::<i64, _>("both_clauses"), row.get::<i64, _>("policies"), "{name}: USING and WITH CHECK");
    }
    let role =
        conn.fetch_one("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'codexos_app'").await.unwrap();
    assert!(!role.get::<bool, _>(0) && !role.get::<bool, _>(1), "the application role must not bypass the policies");
}

#[tokio::test]
async fn an_unfiltered_query_sees_only_the_current_tenant() {
    let (store, database) = fresh_store().await;
    if !database.is_postgres() {
        eprintln!("skipping: row-level security is PostgreSQL's");
        return;
    }
    let acme = tenant(&store, "acme").await;
    let globex = tenant(&store, "globex").await;
    for (tenant, task) in [(acme, "acme task"), (globex, "globex task")] {
        let version = agent(&store, tenant, "fixer", "1.0.0").await;
        queue(&store, tenant, &version, task).await;
    }
    let mut conn = as_application(database.url()).await;

    // No tenant set: nothing of anybody.
    let count: i64 = conn.fetch_one("SELECT COUNT(*) FROM executions").await.unwrap().get(0);
    assert_eq!(count, 0);

    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('codexos.tenant_id', $1, true)")
        .bind(acme.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    // The forgotten filter: every table read whole.
    let tasks: Vec<String> = sqlx::query_scalar("SELECT task FROM executions").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(tasks, vec!["acme task".to_owned()]);
    let tenants: Vec<String> = sqlx::query_scalar("SELECT slug FROM tenants").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(tenants, vec!["acme".to_owned()]);
    // Changing another tenant's rows touches nothing.
    let touched = sqlx::query("UPDATE executions SET task = 'pwned'").execute(&mut *tx).await.unwrap();
    assert_eq!(touched.rows_affected(), 1, "only acme's own execution");
    // Writing a row into another tenant is refused by WITH CHECK.
    let err = sqlx::query("INSERT INTO agents (id, tenant_id, name, created_at) VALUES ('x', $1, 'spy', 0)")
        .bind(globex.to_string())
        .execute(&mut *tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();

    // The store's own reads of the other tenant are untouched.
    let globex_executions = store.list_executions(globex, &codexos_store::ExecutionFilter::default()).await.unwrap();
    assert_eq!(globex_executions.len(), 1);
    assert_eq!(globex_executions[0].task, "globex task");
}

#[tokio::test]
async fn the_application_cannot_rewrite_the_audit_log() {
    let (store, database) = fresh_store().await;
    if !database.is_postgres() {
        eprintln!("skipping: grants are PostgreSQL's (SQLite refuses with triggers, tested with the audit log)");
        return;
    }
    let acme = tenant(&store, "acme").await;
    let entry = NewAuditEntry {
        actor: "system".to_owned(),
        action: "test".to_owned(),
        target: "x".to_owned(),
        outcome: AuditOutcome::Success,
        request_id: None,
        details: serde_json::Value::Null,
    };
    store.append_audit(acme, &entry).await.unwrap();
    let mut conn = as_application(database.url()).await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('codexos.tenant_id', $1, true)")
        .bind(acme.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = tx.execute("UPDATE audit_entries SET outcome = 'denied'").await.unwrap_err().to_string();
    assert!(err.contains("permission denied"), "{err}");
    tx.rollback().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('codexos.tenant_id', $1, true)")
        .bind(acme.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = tx.execute("DELETE FROM audit_entries").await.unwrap_err().to_string();
    assert!(err.contains("permission denied"), "{err}");
    tx.rollback().await.unwrap();

    // Nor the policy versions that decided past calls.
    for statement in ["UPDATE policy_bundles SET data = '{}'", "DELETE FROM policy_bundles"] {
        let mut tx = conn.begin().await.unwrap();
        let err = tx.execute(statement).await.unwrap_err().to_string();
        assert!(err.contains("permission denied"), "{statement}: {err}");
        tx.rollback().await.unwrap();
    }
}
