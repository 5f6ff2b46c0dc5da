-- rm_jsonb_add with every sum held within ±(2^53−1), the API's money range,
-- as the daily-sales projector holds its other figures (projections/
-- daily_sales.go, maxSum): a day's payments by method could otherwise pass
-- what a JSON client reads exactly and then what the projector can decode.
-- A sum that reached the bound stays there and is no longer exact.

-- +goose Up

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION rm_jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    r jsonb := coalesce(a, '{}'::jsonb);
    k text;
    v bigint;
BEGIN
    FOR k, v IN SELECT key, value::bigint FROM jsonb_each_text(coalesce(b, '{}'::jsonb)) LOOP
        CONTINUE WHEN v IS NULL; -- as sum() skips a JSON null
        r := jsonb_set(r, ARRAY[k], to_jsonb(least(greatest(coalesce((r->>k)::numeric, 0) + v,
            -9007199254740991), 9007199254740991)));
    END LOOP;
    -- Keys summing to 0 are dropped, a's own included, as before.
    FOR k IN SELECT key FROM jsonb_each_text(r) WHERE value::numeric = 0 LOOP
        r := r - k;
    END LOOP;
    RETURN r;
END
$$;
-- +goose StatementEnd
