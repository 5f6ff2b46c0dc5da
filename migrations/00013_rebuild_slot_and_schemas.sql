-- Projection rebuilds, revised (package rebuild; 00012 has the design).
-- What changes, and why:
--
--   * Each rebuild builds its shadows in a schema of its own,
--     pos_rebuild_<rebuild id without dashes>, and its runner's search path
--     is that schema alone. A rebuild that lost its slot (its connection
--     died while its process lived on) can no longer write into the next
--     rebuild's shadows, nor fall through to the live tables: the next
--     rebuild drops every other pos_rebuild_* schema, and the lost one's
--     statements then fail for want of their tables.
--   * Every function refuses a session that does not hold the rebuild slot
--     (package rebuild's session advisory lock, keys 0x72626c64 and 1), and
--     any table but the migrating owner's rm_* tables (a table pos_app made
--     itself could carry expressions that would run with the definer's
--     rights).
--   * pos_rebuild_analyze gathers the shadows' statistics before the swap
--     (a partitioned table is never analyzed automatically).
--
-- Still not copied, because no read model has any: triggers, foreign keys,
-- identity columns, storage options, column-level grants. A migration that
-- gives a read-model table one must teach pos_rebuild_prepare to copy it
-- (TestRebuildAllEqualsTheLiveModel compares the catalog before and after a
-- swap).

-- +goose Up

-- IF EXISTS: a database that ran a draft of 00012 may lack one of them.
DROP FUNCTION IF EXISTS pos_rebuild_prepare(text[]);
DROP FUNCTION IF EXISTS pos_rebuild_lock(text[]);
DROP FUNCTION IF EXISTS pos_rebuild_swap(text[], text[]);
DROP FUNCTION IF EXISTS pos_rebuild_clear();
DROP FUNCTION IF EXISTS pos_rebuild_check(text[]);
DROP FUNCTION IF EXISTS pos_rebuild_analyze(text[]);
-- Whatever an interrupted rebuild left there goes with it.
DROP SCHEMA IF EXISTS pos_rebuild CASCADE;

-- pos_rebuild_check refuses a session without the slot, tables that are not
-- the owner's read models, and a shadow schema name of another form.
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_check(tables text[], shadow text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_locks
                    WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                      AND classid = x'72626c64'::int::oid AND objid = 1 AND objsubid = 2
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) THEN
        RAISE EXCEPTION 'pos_rebuild: this session does not hold the rebuild slot';
    END IF;
    IF shadow IS NOT NULL AND shadow !~ '^pos_rebuild_[0-9a-f]{32}$' THEN
        RAISE EXCEPTION 'pos_rebuild: % is not a shadow schema name', shadow;
    END IF;
    IF coalesce(cardinality(tables), 0) = 0 THEN
        RAISE EXCEPTION 'pos_rebuild: no table named';
    END IF;
    FOREACH t IN ARRAY tables LOOP
        IF t IS NULL OR t !~ '^rm_[a-z0-9_]+$' OR NOT EXISTS (
               SELECT 1 FROM pg_class
                WHERE oid = to_regclass(format('public.%I', t)) AND relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)) THEN
            RAISE EXCEPTION 'pos_rebuild: % is not a read-model table', t;
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_drop_shadows drops every shadow schema but keep (NULL: all).
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_drop_shadows(keep text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT nspname FROM pg_namespace
              WHERE nspname ~ '^pos_rebuild_[0-9a-f]{32}$' AND nspname IS DISTINCT FROM keep
    LOOP
        EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_prepare drops the shadows of earlier rebuilds, creates schema
-- shadow (usable by pos_app only: pos_api never reads a half-built model)
-- and builds in it an empty copy of each table and of the projections'
-- bookkeeping (projection_checkpoints, projection_streams), which the
-- shadow runner keeps apart from the live one's.
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_prepare(tables text[], shadow text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    src regclass;
    dst text;
    r record;
BEGIN
    PERFORM public.pos_rebuild_check(tables, shadow);
    PERFORM public.pos_rebuild_drop_shadows(NULL);
    EXECUTE format('CREATE SCHEMA %I', shadow);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', shadow);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO pos_app', shadow);

    FOREACH t IN ARRAY tables || ARRAY['projection_checkpoints', 'projection_streams'] LOOP
        src := format('public.%I', t)::regclass;
        dst := format('%I.%I', shadow, t);
        IF (SELECT relkind FROM pg_class WHERE oid = src) = 'p' THEN
            EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY %s',
                           dst, src, pg_get_partkeydef(src));
            FOR r IN SELECT c.oid, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
                       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                      WHERE i.inhparent = src ORDER BY c.relname
            LOOP
                EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s %s', shadow, r.relname, dst, r.bound);
                PERFORM public.pos_rebuild_secure(r.oid, format('%I.%I', shadow, r.relname)::regclass);
            END LOOP;
        ELSE
            EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS)', dst, src);
        END IF;
        -- Primary keys and unique constraints, then the other indexes, under
        -- their live names (pg_get_indexdef names the live table, qualified,
        -- and ON ONLY for a partitioned one).
        FOR r IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
                  WHERE conrelid = src AND contype IN ('p', 'u', 'x') ORDER BY conname
        LOOP
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', dst, r.conname, r.def);
        END LOOP;
        FOR r IN SELECT pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
                  WHERE i.indrelid = src AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = src)
                  ORDER BY i.indexrelid
        LOOP
            EXECUTE replace(replace(r.def, ' ON ONLY ' || src::text || ' ', ' ON ' || dst || ' '), ' ON ' || src::text || ' ', ' ON ' || dst || ' ');
        END LOOP;
        PERFORM public.pos_rebuild_secure(src, dst::regclass);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_analyze gathers the shadows' statistics, before the swap's
-- locks: the swapped-in tables are planned as well as the live ones were.
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_analyze(tables text[], shadow text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
BEGIN
    PERFORM public.pos_rebuild_check(tables, shadow);
    FOREACH t IN ARRAY tables || ARRAY['projection_streams'] LOOP
        EXECUTE format('ANALYZE %I.%I', shadow, t);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_lock locks projection_streams, then the live tables, against
-- every reader and writer until the calling transaction ends (see 00012 for
-- why projection_streams comes first); the caller then catches the shadow
-- up and calls pos_rebuild_swap in the same transaction.
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_lock(tables text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
BEGIN
    PERFORM public.pos_rebuild_check(tables, NULL);
    LOCK TABLE public.projection_streams IN ACCESS EXCLUSIVE MODE;
    FOREACH t IN ARRAY (SELECT array_agg(x ORDER BY x) FROM unnest(tables) AS x) LOOP
        EXECUTE format('LOCK TABLE public.%I IN ACCESS EXCLUSIVE MODE', t);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_swap drops the live tables, moves their shadows (parents and
-- partitions) into public, replaces the live bookkeeping of the projections
-- rebuilt by the shadow's, and drops the shadow schema. Nothing else refers
-- to the live tables (a view on one would make the DROP fail, and the swap
-- with it).
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_swap(tables text[], projections text[], shadow text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    r record;
BEGIN
    PERFORM public.pos_rebuild_check(tables, shadow);
    PERFORM public.pos_rebuild_lock(tables);
    FOREACH t IN ARRAY tables LOOP
        IF to_regclass(format('%I.%I', shadow, t)) IS NULL THEN
            RAISE EXCEPTION 'pos_rebuild: no shadow of %', t;
        END IF;
        EXECUTE format('DROP TABLE public.%I', t);
        FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = format('%I.%I', shadow, t)::regclass
        LOOP
            EXECUTE format('ALTER TABLE %I.%I SET SCHEMA public', shadow, r.relname);
        END LOOP;
        EXECUTE format('ALTER TABLE %I.%I SET SCHEMA public', shadow, t);
    END LOOP;
    DELETE FROM public.projection_checkpoints WHERE projection = ANY (projections);
    EXECUTE format($q$INSERT INTO public.projection_checkpoints (projection, partition, major, minor, updated_at)
        SELECT projection, partition, major, minor, updated_at FROM %I.projection_checkpoints WHERE projection = ANY ($1)$q$, shadow)
        USING projections;
    DELETE FROM public.projection_streams WHERE projection = ANY (projections);
    EXECUTE format($q$INSERT INTO public.projection_streams (projection, stream_name, version)
        SELECT projection, stream_name, version FROM %I.projection_streams WHERE projection = ANY ($1)$q$, shadow)
        USING projections;
    EXECUTE format('DROP SCHEMA %I CASCADE', shadow);
END
$$;
-- +goose StatementEnd

REVOKE ALL ON FUNCTION pos_rebuild_check(text[], text), pos_rebuild_drop_shadows(text), pos_rebuild_prepare(text[], text),
    pos_rebuild_analyze(text[], text), pos_rebuild_lock(text[]), pos_rebuild_swap(text[], text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pos_rebuild_prepare(text[], text), pos_rebuild_analyze(text[], text), pos_rebuild_lock(text[]),
    pos_rebuild_swap(text[], text[], text) TO pos_app;
