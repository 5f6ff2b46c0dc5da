-- +goose Up

-- merchant_id scopes the merchant feed but is not in the hash chain; tie it
-- to the stream name (which is) so the two can never disagree, even for a
-- row written behind the store's back. A name that does not parse yields
-- NULL, which IS NOT DISTINCT FROM refuses.
ALTER TABLE events ADD CONSTRAINT events_merchant_in_stream CHECK (
    merchant_id IS NOT DISTINCT FROM substring(stream_name FROM '^[a-z][a-z0-9_]*-([0-9a-fA-F-]{36})\.')::uuid
);
