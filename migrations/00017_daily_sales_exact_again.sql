-- 00016 again, and rm_jsonb_add as 00015 made it: for a database that a
-- build of 2026-12-07 migrated with an earlier 00016, never released, which
-- clamped the sums where they are stored instead of where they are read
-- (a void then took off more than its sale had added). Where 00016 ran as
-- it stands, both statements change nothing.

-- +goose Up
ALTER TABLE rm_daily_sales
    ALTER COLUMN gross TYPE numeric,
    ALTER COLUMN discounts TYPE numeric,
    ALTER COLUMN tax TYPE numeric,
    ALTER COLUMN net TYPE numeric,
    ALTER COLUMN refunds TYPE numeric;

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
        r := jsonb_set(r, ARRAY[k], to_jsonb(coalesce((r->>k)::numeric, 0) + v));
    END LOOP;
    -- Keys summing to 0 are dropped, a's own included, as before.
    FOR k IN SELECT key FROM jsonb_each_text(r) WHERE value::numeric = 0 LOOP
        r := r - k;
    END LOOP;
    RETURN r;
END
$$;
-- +goose StatementEnd
