-- projection_streams (00006) is partitioned by projection, so that a
-- rebuild's swap moves a projection's stream versions in by exchanging one
-- partition for its shadow (DETACH, ATTACH), instead of deleting and
-- copying a row per stream while every runner waits on the lock (0.2 s at
-- 100,000 events, growing with the history: seconds at millions).
--
-- Each projection a rebuild can swap (projections.Tabled) has a partition
-- of its own, and the stock process manager too (it is the largest user);
-- any other name lands in the DEFAULT partition. A migration that adds a
-- projector adds its partition here, like these, and names it in the
-- DEFAULT partition's CHECK: ATTACH then proves from that CHECK, without
-- scanning the DEFAULT partition, that none of its rows belongs to the
-- partition attached. Each named partition also carries a CHECK stating
-- its bound, as the shadow's do when swapped in (pos_rebuild_analyze), so a
-- swap leaves the catalog as it found it. A rebuild of a projection without
-- a partition fails at the swap (TestEveryRebuiltProjectionHasItsPartition
-- fails first).
--
-- This migration copies the existing rows once, under an exclusive lock.

-- +goose Up

ALTER TABLE projection_streams RENAME TO projection_streams_unpartitioned;
ALTER INDEX projection_streams_pkey RENAME TO projection_streams_unpartitioned_pkey;

CREATE TABLE projection_streams (
    projection  text   NOT NULL,
    stream_name text   NOT NULL,
    version     bigint NOT NULL CHECK (version >= 0),
    PRIMARY KEY (projection, stream_name)
) PARTITION BY LIST (projection);

CREATE TABLE projection_streams_transactions PARTITION OF projection_streams FOR VALUES IN ('transactions');
CREATE TABLE projection_streams_daily_sales PARTITION OF projection_streams FOR VALUES IN ('daily_sales');
CREATE TABLE projection_streams_merchant_settings PARTITION OF projection_streams FOR VALUES IN ('merchant_settings');
CREATE TABLE projection_streams_stock PARTITION OF projection_streams FOR VALUES IN ('stock');
CREATE TABLE projection_streams_stock_process PARTITION OF projection_streams FOR VALUES IN ('stock_process');
CREATE TABLE projection_streams_other PARTITION OF projection_streams DEFAULT;
-- The bound as a CHECK, in the form pos_rebuild_analyze gives the shadows,
-- and the privileges pos_rebuild_prepare gives them (none but the owner's:
-- the service reaches the rows through the parent).
-- +goose StatementBegin
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'projection_streams'::regclass
    LOOP
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', r.relname);
        IF r.bound <> 'DEFAULT' THEN
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT projection_streams_bound CHECK (%s)', r.relname, pg_get_partition_constraintdef(r.oid));
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd
ALTER TABLE projection_streams_other ADD CONSTRAINT projection_streams_other_unnamed
    CHECK (projection <> ALL (ARRAY['transactions', 'daily_sales', 'merchant_settings', 'stock', 'stock_process']));

INSERT INTO projection_streams (projection, stream_name, version)
SELECT projection, stream_name, version FROM projection_streams_unpartitioned;
DROP TABLE projection_streams_unpartitioned;

REVOKE ALL ON projection_streams FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_streams TO pos_app;

-- pos_rebuild_analyze gathers the shadows' statistics, before the swap's
-- locks (the swapped-in tables are planned as well as the live ones were),
-- and gives each of the shadow's projection_streams partitions but the
-- DEFAULT one a CHECK that states its partition bound: ATTACH then takes
-- it without scanning it.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION pos_rebuild_analyze(tables text[], shadow text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    r record;
BEGIN
    PERFORM public.pos_rebuild_check(tables, shadow);
    FOREACH t IN ARRAY tables || ARRAY['projection_streams'] LOOP
        EXECUTE format('ANALYZE %I.%I', shadow, t);
    END LOOP;
    FOR r IN SELECT c.oid, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = format('%I.projection_streams', shadow)::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
                AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = c.oid AND conname = 'projection_streams_bound')
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT projection_streams_bound CHECK (%s)',
                       shadow, r.relname, pg_get_partition_constraintdef(r.oid));
    END LOOP;
END
$$;
-- +goose StatementEnd

-- pos_rebuild_swap drops the live tables, moves their shadows (parents and
-- partitions) into public, replaces the live bookkeeping of the projections
-- rebuilt by the shadow's (a projection's stream versions by exchanging its
-- partition of projection_streams), and drops the shadow schema. Nothing
-- else refers to the live tables (a view on one would
-- make the DROP fail, and the swap with it).
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION pos_rebuild_swap(tables text[], projections text[], shadow text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
    p text;
    r record;
    live_part regclass;
    shadow_part regclass;
    part_name text;
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
    FOREACH p IN ARRAY projections LOOP
        SELECT c.oid::regclass INTO live_part
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'public.projection_streams'::regclass
           AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%L)', p);
        SELECT c.oid::regclass, c.relname INTO shadow_part, part_name
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = format('%I.projection_streams', shadow)::regclass
           AND pg_get_expr(c.relpartbound, c.oid) = format('FOR VALUES IN (%L)', p);
        IF live_part IS NULL OR shadow_part IS NULL THEN
            RAISE EXCEPTION 'pos_rebuild: projection_streams has no partition for %', p;
        END IF;
        EXECUTE format('DROP TABLE %s', live_part);
        EXECUTE format('ALTER TABLE %I.projection_streams DETACH PARTITION %s', shadow, shadow_part);
        EXECUTE format('ALTER TABLE %s SET SCHEMA public', shadow_part);
        EXECUTE format('ALTER TABLE public.projection_streams ATTACH PARTITION public.%I FOR VALUES IN (%L)', part_name, p);
    END LOOP;
    EXECUTE format('DROP SCHEMA %I CASCADE', shadow);
END
$$;
-- +goose StatementEnd
