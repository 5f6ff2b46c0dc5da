-- +goose Up

-- Responses of commands sent with an Idempotency-Key, per merchant. A row is
-- inserted in the same transaction as the command's events, so a key is
-- either recorded with its effect or free (api/idempotency.go).
CREATE TABLE idempotency_keys (
    merchant_id  uuid        NOT NULL,
    key          text        NOT NULL,
    -- SHA-256 of method, path and body: the same key with another request
    -- is refused.
    request_hash bytea       NOT NULL,
    status_code  integer     NOT NULL,
    headers      jsonb       NOT NULL,
    body         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, key)
);

-- The janitor deletes expired keys oldest first.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

GRANT SELECT, INSERT, DELETE ON idempotency_keys TO pos_app;

-- Human-readable transaction codes come from blocks of numbers leased per
-- merchant (commands/codes.go): one row update per block, not per sale.
CREATE TABLE code_blocks (
    merchant_id uuid   NOT NULL PRIMARY KEY,
    next_block  bigint NOT NULL
);

GRANT SELECT, INSERT, UPDATE ON code_blocks TO pos_app;
