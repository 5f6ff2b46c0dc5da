-- pos_rebuild_discard drops a failed rebuild's shadow schema at once, from
-- the session that still holds the rebuild slot, instead of leaving its
-- tables (up to a whole copy of the read models) until the next rebuild's
-- pos_rebuild_prepare drops them. A rebuild that lost its slot cannot call
-- it; the next rebuild still drops what it left.

-- +goose Up

-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_discard(tables text[], shadow text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM public.pos_rebuild_check(tables, shadow);
    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', shadow);
END
$$;
-- +goose StatementEnd

REVOKE ALL ON FUNCTION pos_rebuild_discard(text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pos_rebuild_discard(text[], text) TO pos_app;
