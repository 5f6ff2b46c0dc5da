-- The stock process manager's deadline rows get a revision, bumped by every
-- change the process manager makes to a row, so that the sweeper deletes
-- only the row it acted on (not one a new reservation extended meanwhile).
--
-- And when each process manager was first started (processes.Activate): it
-- acts only on events recorded from then on. History written before it
-- existed (sales before stock was tracked) is not its to act on, so a first
-- deployment over an existing store neither sells stock that was never
-- received nor times out sales that are long gone.

-- +goose Up

ALTER TABLE process_deadlines ADD COLUMN revision bigint NOT NULL DEFAULT 0;

CREATE TABLE process_managers (
    name        text        PRIMARY KEY,
    active_from timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON process_managers FROM PUBLIC;
GRANT SELECT, INSERT ON process_managers TO pos_app;
