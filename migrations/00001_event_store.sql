-- The event store: the record of truth. Append-only, enforced twice: triggers
-- refuse UPDATE, DELETE and TRUNCATE for everyone (a superuser must disable
-- them on purpose, and the hash chain still exposes what it changes), and the
-- application role pos_app is granted only SELECT and INSERT.

-- +goose Up

-- +goose StatementBegin
DO $$
BEGIN
    -- Roles are cluster-wide; another database of this cluster may create it
    -- concurrently, so a duplicate is not an error.
    CREATE ROLE pos_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
-- +goose StatementEnd

CREATE TABLE events (
    -- Assigned from a sequence, so appends never queue behind one counter row.
    -- Gaps are normal (rolled-back appends); order is (transaction_id,
    -- global_position), see pgstore.
    global_position bigint GENERATED ALWAYS AS IDENTITY,
    -- The appending transaction. Readers never pass a transaction id that
    -- may still commit (pg_snapshot_xmin), so late commits are never skipped.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    stream_name     text        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    merchant_id     uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    -- json, not jsonb: the exact bytes appended are the bytes hashed.
    data            json        NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    hash            bytea       NOT NULL,
    prev_hash       bytea,
    CONSTRAINT events_pkey PRIMARY KEY (global_position),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_name, version)
);

-- The global feed, in the order readers follow it.
CREATE INDEX events_feed_idx ON events (transaction_id, global_position);
-- One merchant's feed reads this index only: no other merchant's rows.
CREATE INDEX events_merchant_feed_idx ON events (merchant_id, transaction_id, global_position);

-- +goose StatementBegin
CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

REVOKE ALL ON events FROM PUBLIC;
GRANT SELECT, INSERT ON events TO pos_app;
