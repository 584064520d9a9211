-- A checkpoint is indexed once per execution that holds it, not once in
-- all: content-addressed ids repeat (two executions that reach the same
-- workspace state take the same checkpoint, and a fork holds its parent's
-- checkpoints up to its step), and each holder's retention must count it.
ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_pkey;
ALTER TABLE checkpoints ADD PRIMARY KEY (tenant_id, execution_id, id);
CREATE INDEX checkpoints_id ON checkpoints (tenant_id, id);
