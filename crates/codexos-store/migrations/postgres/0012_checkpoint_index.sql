-- A checkpoint is indexed once per execution that holds it, not once in
-- all: content-addressed ids repeat (two executions that reach the same
-- workspace state take the same checkpoint, and a fork holds its parent's
-- checkpoints up to its step), and each holder's retention must count it.
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_pkey;
ALTER TABLE checkpoints ADD PRIMARY KEY (tenant_id, execution_id, id);
CREATE INDEX checkpoints_id ON checkpoints (tenant_id, id);

-- Forks made before this migration hold their parents' checkpoints up to
-- their step from now on, like new ones (one level of forks; a fork of a
-- fork made earlier holds its own parent's).
INSERT INTO checkpoints (id, tenant_id, execution_id, step, tree_id, size_bytes, created_at)
    SELECT c.id, c.tenant_id, f.id, c.step, c.tree_id, 0, c.created_at
    FROM executions f
    JOIN checkpoints c ON c.tenant_id = f.tenant_id AND c.execution_id = f.parent_execution_id AND c.step <= f.parent_step
    WHERE f.parent_execution_id IS NOT NULL
    ON CONFLICT (tenant_id, execution_id, id) DO NOTHING;
