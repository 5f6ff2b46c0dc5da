-- +goose Up

-- Without a transactional event store (EventStoreDB), an idempotency key is
-- claimed first and its response written when the command has run
-- (api/idempotency.go): that write is an UPDATE.
GRANT UPDATE ON idempotency_keys TO pos_app;
