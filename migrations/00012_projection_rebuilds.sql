-- Projection rebuilds (SPEC §7, package rebuild): a projection is rebuilt
-- from the event store's whole history into shadow tables in schema
-- pos_rebuild, while queries keep reading the live tables in public; then,
-- in one transaction, the live tables are locked, the shadow catches up the
-- last events, and the shadow tables replace the live ones.
--
-- The roles that run the service own nothing (00006, 00011), so the DDL
-- lives here, in SECURITY DEFINER functions owned by the migrating user and
-- executable by pos_app only: pos_app can rebuild the read models and
-- nothing else. Each takes read-model table names ('rm_…', existing in
-- public) and refuses any other name.
--
-- A shadow table is a copy of its live table taken from the catalog, so it
-- follows whatever later migrations do to the live one: its columns,
-- defaults, CHECK constraints and collations (LIKE), its hash partitions
-- under the same names, its primary key, unique constraints and indexes
-- under the same names, row-level security ENABLEd and FORCEd with the
-- same policies, and the same grants, on the parent and on every
-- partition. Migrations that refer to an index or a constraint by name
-- keep working after a rebuild.

-- +goose Up

-- Where shadow tables are built. Only pos_app may use it; nothing in it is
-- readable by pos_api, so a query never reads a half-built model.
CREATE SCHEMA pos_rebuild;
REVOKE ALL ON SCHEMA pos_rebuild FROM PUBLIC;
GRANT USAGE ON SCHEMA pos_rebuild TO pos_app;

-- One row per rebuild, started by `pos rebuild` or POST
-- /v1/admin/projections/{name}/rebuild, updated as it goes (about once a
-- second), read by GET /v1/admin/projections. error is for operators (it
-- may hold internal text, which the API never shows).
CREATE TABLE projection_rebuilds (
    rebuild_id   uuid        PRIMARY KEY,
    projections  text[]      NOT NULL,
    state        text        NOT NULL CHECK (state IN ('running', 'done', 'failed', 'abandoned')),
    events_done  bigint      NOT NULL DEFAULT 0,
    -- The events the history held when the rebuild started (NULL when the
    -- store cannot count them: no ETA then).
    events_total bigint,
    started_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    error        text
);
CREATE INDEX projection_rebuilds_started_idx ON projection_rebuilds (started_at DESC);
REVOKE ALL ON projection_rebuilds FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON projection_rebuilds TO pos_app;

-- pos_rebuild_check refuses anything but existing read-model tables.
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_check(tables text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
BEGIN
    IF coalesce(cardinality(tables), 0) = 0 THEN
        RAISE EXCEPTION 'pos_rebuild: no table named';
    END IF;
    FOREACH t IN ARRAY tables LOOP
        IF t IS NULL OR t !~ '^rm_[a-z0-9_]+$' OR to_regclass(format('public.%I', t)) IS NULL THEN
            RAISE EXCEPTION 'pos_rebuild: % is not a read-model table', t;
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_secure gives dst the row security, policies and grants of src.
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_secure(src regclass, dst regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = src) THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', dst);
    END IF;
    IF (SELECT relforcerowsecurity FROM pg_class WHERE oid = src) THEN
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', dst);
    END IF;
    FOR r IN
        SELECT p.polname, p.polpermissive,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS cmd,
               (SELECT string_agg(CASE WHEN o = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(o)) END, ', ') FROM unnest(p.polroles) AS o) AS roles,
               pg_get_expr(p.polqual, p.polrelid) AS qual,
               pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
          FROM pg_policy p WHERE p.polrelid = src
    LOOP
        EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO %s', r.polname, dst,
                       CASE WHEN r.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END, r.cmd, r.roles)
             || coalesce(' USING (' || r.qual || ')', '')
             || coalesce(' WITH CHECK (' || r.with_check || ')', '');
    END LOOP;
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', dst);
    FOR r IN
        SELECT a.grantee, a.privilege_type
          FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) AS a
         WHERE c.oid = src AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s ON %s TO %s', r.privilege_type, dst,
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_clear drops every table of schema pos_rebuild (partitions go
-- with their parents).
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_clear() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_class c
              WHERE c.relnamespace = 'pos_rebuild'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    LOOP
        EXECUTE format('DROP TABLE pos_rebuild.%I', r.relname);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_prepare empties schema pos_rebuild and builds in it an empty
-- shadow of each table, and of the projections' bookkeeping
-- (projection_checkpoints, projection_streams), which the shadow runner
-- keeps apart from the live one's.
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_prepare(tables text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    src regclass;
    dst text;
    r record;
BEGIN
    PERFORM public.pos_rebuild_check(tables);
    PERFORM public.pos_rebuild_clear();

    FOREACH t IN ARRAY tables || ARRAY['projection_checkpoints', 'projection_streams'] LOOP
        src := format('public.%I', t)::regclass;
        dst := format('pos_rebuild.%I', t);
        IF (SELECT relkind FROM pg_class WHERE oid = src) = 'p' THEN
            EXECUTE format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY %s',
                           dst, src, pg_get_partkeydef(src));
            FOR r IN SELECT c.oid, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
                       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                      WHERE i.inhparent = src ORDER BY c.relname
            LOOP
                EXECUTE format('CREATE TABLE pos_rebuild.%I PARTITION OF %s %s', r.relname, dst, r.bound);
                PERFORM public.pos_rebuild_secure(r.oid, format('pos_rebuild.%I', r.relname)::regclass);
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

-- pos_rebuild_lock locks the live tables against every reader and writer
-- until the calling transaction ends; the caller then catches the shadow up
-- and calls pos_rebuild_swap in the same transaction.
--
-- projection_streams is locked first. A live runner's transaction reads its
-- streams' applied versions there before it writes any read model: one
-- that read them before the swap and wrote after it would apply again, onto
-- the shadow's rows, events the shadow has applied. With the lock, such a
-- transaction either commits before the lock is granted (and the shadow
-- catches up past it), or reads the versions after the swap. Every runner,
-- the process managers' too, waits while the lock is held.
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_lock(tables text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
BEGIN
    PERFORM public.pos_rebuild_check(tables);
    LOCK TABLE public.projection_streams IN ACCESS EXCLUSIVE MODE;
    FOREACH t IN ARRAY (SELECT array_agg(x ORDER BY x) FROM unnest(tables) AS x) LOOP
        EXECUTE format('LOCK TABLE public.%I IN ACCESS EXCLUSIVE MODE', t);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_swap drops the live tables and moves their shadows (parents
-- and partitions) into public, and replaces the live bookkeeping of the
-- projections rebuilt by the shadow's. Nothing else refers to the live
-- tables (a view on one would make the DROP fail, and the swap with it).
-- +goose StatementBegin
CREATE FUNCTION pos_rebuild_swap(tables text[], projections text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    r record;
BEGIN
    PERFORM public.pos_rebuild_lock(tables);
    FOREACH t IN ARRAY tables LOOP
        IF to_regclass(format('pos_rebuild.%I', t)) IS NULL THEN
            RAISE EXCEPTION 'pos_rebuild: no shadow of %', t;
        END IF;
        EXECUTE format('DROP TABLE public.%I', t);
        FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = format('pos_rebuild.%I', t)::regclass
        LOOP
            EXECUTE format('ALTER TABLE pos_rebuild.%I SET SCHEMA public', r.relname);
        END LOOP;
        EXECUTE format('ALTER TABLE pos_rebuild.%I SET SCHEMA public', t);
    END LOOP;
    DELETE FROM public.projection_checkpoints WHERE projection = ANY (projections);
    INSERT INTO public.projection_checkpoints (projection, partition, major, minor, updated_at)
        SELECT projection, partition, major, minor, updated_at FROM pos_rebuild.projection_checkpoints
         WHERE projection = ANY (projections);
    DELETE FROM public.projection_streams WHERE projection = ANY (projections);
    INSERT INTO public.projection_streams (projection, stream_name, version)
        SELECT projection, stream_name, version FROM pos_rebuild.projection_streams
         WHERE projection = ANY (projections);
    PERFORM public.pos_rebuild_clear();
END
$$;
-- +goose StatementEnd

REVOKE ALL ON FUNCTION pos_rebuild_check(text[]), pos_rebuild_secure(regclass, regclass), pos_rebuild_clear(),
    pos_rebuild_prepare(text[]), pos_rebuild_lock(text[]), pos_rebuild_swap(text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pos_rebuild_prepare(text[]), pos_rebuild_lock(text[]), pos_rebuild_swap(text[], text[]) TO pos_app;
