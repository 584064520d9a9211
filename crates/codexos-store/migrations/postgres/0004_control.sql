-- Control requests a worker must act on while it runs an execution:
-- 'pause' (stop after the current step) or 'cancel' (stop now). Requests
-- on executions no worker holds take effect at once and leave this NULL.
ALTER TABLE executions ADD COLUMN control TEXT;
