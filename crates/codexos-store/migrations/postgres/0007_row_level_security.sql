-- Row-level security: the database itself keeps tenants apart, so a query
-- that forgets its tenant filter still cannot read or write another
-- tenant's rows.
--
-- The application's connections switch to the role `codexos_app` (see
-- connect.rs): not a superuser, not the tables' owner, no BYPASSRLS, so the
-- policies apply to it. Every transaction on a tenant's data sets
-- `codexos.tenant_id` with set_config(..., true) (transaction-local); the
-- few that must span tenants (finding a key's tenant, leasing from the
-- shared queue, installation-wide figures, retention, rotation) set
-- `codexos.system` instead. A connection that set neither sees no tenant
-- row at all. Tables added later must get the same treatment (a store test
-- checks every table with a tenant_id column).

DO $$
BEGIN
    CREATE ROLE codexos_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
EXCEPTION
    -- Roles belong to the cluster: another database of it made it already
    -- (concurrently, a unique violation).
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- The migrating user must be able to switch to the role.
DO $$
BEGIN
    EXECUTE format('GRANT codexos_app TO %I', current_user);
EXCEPTION
    WHEN duplicate_object OR insufficient_privilege OR invalid_grant_operation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO codexos_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO codexos_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO codexos_app;
REVOKE ALL ON _sqlx_migrations FROM codexos_app;
-- History is never rewritten: no UPDATE or DELETE on the audit log.
REVOKE UPDATE, DELETE ON audit_entries, audit_checkpoints FROM codexos_app;
-- The roles are fixed by the schema.
REVOKE INSERT, UPDATE, DELETE ON roles FROM codexos_app;

-- Whether a row of `tenant` is visible to the current transaction.
CREATE FUNCTION codexos_visible(tenant TEXT) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT tenant = current_setting('codexos.tenant_id', true)
        OR current_setting('codexos.system', true) = 'on'
$$;

DO $$
DECLARE
    tenant_table TEXT;
BEGIN
    FOR tenant_table IN
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
        WHERE c.table_schema = 'public' AND c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (codexos_visible(tenant_id)) WITH CHECK (codexos_visible(tenant_id))',
            tenant_table
        );
    END LOOP;
END
$$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants USING (codexos_visible(id)) WITH CHECK (codexos_visible(id));

-- Users are global identities: a tenant sees its members only, and only
-- installation-wide operations create them.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_members ON users
    USING (
        current_setting('codexos.system', true) = 'on'
        OR EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = users.id AND codexos_visible(m.tenant_id))
    )
    WITH CHECK (current_setting('codexos.system', true) = 'on');
