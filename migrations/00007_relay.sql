-- The relay's checkpoint (package relay): how far along the event feed it
-- has published to NATS JetStream. It is written only after the broker has
-- acknowledged every message up to the position, and only on the connection
-- that holds the relay's advisory lock, so a relay that lost the lock cannot
-- move the checkpoint. A crash between publish and checkpoint republishes;
-- JetStream drops the copies inside its duplicate window (Nats-Msg-Id is the
-- event id) and consumers are idempotent beyond it.

-- +goose Up

CREATE TABLE relay_checkpoints (
    name            text        PRIMARY KEY,
    -- eventstore.Position of the last event published (Start is 0, 0).
    major           bigint      NOT NULL CHECK (major >= 0),
    minor           bigint      NOT NULL CHECK (minor >= 0),
    -- How many merchant partitions partition_heads was computed for; heads
    -- of another partition count are unknown.
    partitions      integer     NOT NULL CHECK (partitions > 0),
    -- {"<partition>": "major.minor"}: the last event published per
    -- partition, sent as the next one's prev_position so that consumers see
    -- a lost message.
    partition_heads jsonb       NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON relay_checkpoints FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON relay_checkpoints TO pos_app;
