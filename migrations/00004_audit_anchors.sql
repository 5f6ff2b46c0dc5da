-- Signed tail anchors (package audit). Hash chains expose a changed or
-- removed middle event, but not a removed tail or a whole removed stream:
-- every remaining chain still verifies. An anchor is a signed statement of a
-- merchant's stream heads at a feed position; verify compares the current
-- heads with the latest anchor and reports what is missing.
--
-- Append-only like events: triggers refuse UPDATE, DELETE and TRUNCATE for
-- everyone, and pos_app may only SELECT and INSERT. Each anchor is also
-- logged (msg="audit anchor") so an auditor can keep a copy outside the
-- database.

-- +goose Up

-- The signature (Ed25519, key named by key_id) covers merchant_id, position,
-- created_at, stream_count, event_count, root and prev (audit.Anchor).
CREATE TABLE audit_anchors (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id  uuid        NOT NULL,
    -- The feed position of the merchant's last event the anchor covers
    -- (eventstore.Position, "major.minor").
    position     text        NOT NULL,
    created_at   timestamptz NOT NULL,
    stream_count bigint      NOT NULL CHECK (stream_count >= 0),
    event_count  bigint      NOT NULL CHECK (event_count >= 0),
    -- RFC 6962 Merkle root over every stream head (stream, version, hash),
    -- sorted by stream name.
    root         bytea       NOT NULL,
    -- SHA-256 of the merchant's previous anchor's signature; empty for the
    -- first. Anchors of one merchant form a chain.
    prev         bytea       NOT NULL,
    key_id       text        NOT NULL,
    signature    bytea       NOT NULL,
    -- Every head (is_full) or only the heads changed since the previous anchor
    -- (a delta), encoded by audit.encodeLeaves. A delta is authenticated by
    -- the root: the heads rebuilt from the last full anchor and the deltas
    -- after it must hash to it.
    is_full      boolean     NOT NULL,
    heads        bytea       NOT NULL
);

CREATE INDEX audit_anchors_merchant_idx ON audit_anchors (merchant_id, seq);

-- +goose StatementBegin
CREATE FUNCTION audit_anchors_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit anchors are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_anchors_no_update BEFORE UPDATE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_anchors_refuse_change();
CREATE TRIGGER audit_anchors_no_delete BEFORE DELETE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_anchors_refuse_change();
CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION audit_anchors_refuse_change();

REVOKE ALL ON audit_anchors FROM PUBLIC;
GRANT SELECT, INSERT ON audit_anchors TO pos_app;
