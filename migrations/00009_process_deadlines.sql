-- Deadlines of the stock process manager (package processes): a sale that
-- holds reserved units must be paid, or be voided, before its deadline.
-- A row is written in the same transaction as the process manager's
-- bookkeeping (projection_streams under its name) when a reservation or a
-- checkout is seen, and deleted when the sale is paid or voided; the
-- sweeper acts on rows past due (SELECT … FOR UPDATE SKIP LOCKED, so
-- several workers never act on one row at once). Bookkeeping, not a read
-- model: not merchant-scoped by RLS, not readable by pos_api.

-- +goose Up

CREATE TABLE process_deadlines (
    merchant_id    uuid        NOT NULL,
    transaction_id uuid        NOT NULL,
    branch_id      uuid        NOT NULL,
    -- The SKUs reserved for the sale, so a draft left holding them (a
    -- checkout that crashed half way) can release them.
    skus           text[]      NOT NULL DEFAULT '{}',
    due_at         timestamptz NOT NULL,
    -- Failed attempts of the sweeper, for backoff and for operators.
    attempts       integer     NOT NULL DEFAULT 0,
    last_error     text,
    PRIMARY KEY (merchant_id, transaction_id)
);

CREATE INDEX process_deadlines_due_idx ON process_deadlines (due_at);

REVOKE ALL ON process_deadlines FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON process_deadlines TO pos_app;
