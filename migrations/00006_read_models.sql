-- Read models (SPEC §5) and the projection runner's bookkeeping (package
-- projections). Read models are built only by projectors, from events; they
-- can be dropped and rebuilt from the event store at any time.
--
-- Tenancy is enforced in the database (SPEC §3): every read-model table has
-- row-level security ENABLEd and FORCEd, with a policy that shows a row only
-- when the transaction-local setting pos.merchant_id names its merchant. An
-- unset or empty setting matches nothing (NULLIF(…, '') is NULL, and
-- "merchant_id = NULL" is never true), so a request that forgot to set it
-- sees no rows rather than every merchant's: it fails closed.
--
-- Roles:
--   pos_api  the query side (package queries): SELECT on read models only. It
--            owns nothing and has no BYPASSRLS, so the policies always apply.
--   pos_app  the projectors (and the command side): SELECT, INSERT, UPDATE,
--            DELETE on read models, under the same policies, and the
--            bookkeeping tables, which pos_api cannot read.
-- The tables are owned by the migrating user; FORCE makes the policies apply
-- to the owner too (superusers still bypass them: never serve queries as one).
--
-- Partitions. Read-model tables are hash-partitioned by merchant into 8
-- partitions, so one merchant's rows live together and a merchant-scoped
-- query touches one partition. Privileges are checked on the parent only
-- when a partition is reached through it; no role is granted anything on a
-- partition directly, and the partitions carry the same forced policy too.

-- +goose Up

-- +goose StatementBegin
DO $$
BEGIN
    -- Roles are cluster-wide; another database of this cluster may create it
    -- concurrently, so a duplicate is not an error.
    CREATE ROLE pos_api NOLOGIN NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
-- +goose StatementEnd

-- rm_jsonb_add adds two objects of integer values key by key ({"CASH": 5} +
-- {"CASH": -5, "CARD": 3} = {"CARD": 3}); keys whose sum is 0 are dropped.
-- It lets a daily-sales upsert merge its by-method deltas in one atomic
-- statement, so concurrent projections of one day never lose an update.
-- +goose StatementBegin
CREATE FUNCTION rm_jsonb_add(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(k, s), '{}'::jsonb)
    FROM (
        SELECT k, sum(v) AS s
        FROM (
            SELECT key AS k, value::bigint AS v FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
            UNION ALL
            SELECT key, value::bigint FROM jsonb_each_text(coalesce(b, '{}'::jsonb))
        ) kv
        GROUP BY k
    ) sums
    WHERE s <> 0
$$;
-- +goose StatementEnd

-- One row per transaction (GET /v1/transactions, GET /v1/transactions/{id}),
-- written by projections.Transactions. Amounts are minor units of currency.
CREATE TABLE rm_transactions (
    merchant_id        uuid        NOT NULL,
    transaction_id     uuid        NOT NULL,
    code               text        NOT NULL,
    branch_id          uuid        NOT NULL,
    status             text        NOT NULL,
    currency           text        NOT NULL,
    prices_include_tax boolean     NOT NULL,
    -- Live figures while a draft, frozen by CheckedOut.
    subtotal           bigint      NOT NULL DEFAULT 0,
    discount           bigint      NOT NULL DEFAULT 0,
    tax                bigint      NOT NULL DEFAULT 0,
    grand_total        bigint      NOT NULL DEFAULT 0,
    -- Σ applied of settled payments; Σ refunds.
    paid               bigint      NOT NULL DEFAULT 0,
    refunded           bigint      NOT NULL DEFAULT 0,
    -- Arrays of objects, shaped as in projections/transactions.go (lineJSON…)
    -- and read by queries.Line, Discount, Payment, Refund.
    lines              jsonb       NOT NULL DEFAULT '[]',
    discounts          jsonb       NOT NULL DEFAULT '[]',
    payments           jsonb       NOT NULL DEFAULT '[]',
    refunds            jsonb       NOT NULL DEFAULT '[]',
    opened_at          timestamptz NOT NULL,
    -- The recorded time of the last event applied.
    updated_at         timestamptz NOT NULL,
    -- The stream version and feed position of the last event applied.
    version            bigint      NOT NULL,
    pos_major          bigint      NOT NULL,
    pos_minor          bigint      NOT NULL,
    PRIMARY KEY (merchant_id, transaction_id)
) PARTITION BY HASH (merchant_id);

-- Listing, newest first, keyset-paged on (opened_at, transaction_id).
CREATE INDEX rm_transactions_list_idx ON rm_transactions (merchant_id, opened_at DESC, transaction_id DESC);
CREATE INDEX rm_transactions_branch_idx ON rm_transactions (merchant_id, branch_id, opened_at DESC, transaction_id DESC);
CREATE INDEX rm_transactions_status_idx ON rm_transactions (merchant_id, status, opened_at DESC, transaction_id DESC);

-- Daily sales by branch, business day (in the merchant's time zone) and
-- currency (GET /v1/reports/daily-sales), written by projections.DailySales.
-- net = grand total − tax (the pre-tax net in both tax modes); refunds are
-- counted on the refund's own day.
CREATE TABLE rm_daily_sales (
    merchant_id  uuid        NOT NULL,
    branch_id    uuid        NOT NULL,
    business_day date        NOT NULL,
    currency     text        NOT NULL,
    count        bigint      NOT NULL DEFAULT 0,
    gross        bigint      NOT NULL DEFAULT 0,
    discounts    bigint      NOT NULL DEFAULT 0,
    tax          bigint      NOT NULL DEFAULT 0,
    net          bigint      NOT NULL DEFAULT 0,
    refunds      bigint      NOT NULL DEFAULT 0,
    -- {"CASH": applied, "CARD": applied, …} of settled payments.
    by_method    jsonb       NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, branch_id, business_day, currency)
) PARTITION BY HASH (merchant_id);

CREATE INDEX rm_daily_sales_day_idx ON rm_daily_sales (merchant_id, business_day);

-- What projections.DailySales remembers of each sale between its events
-- (branch, frozen totals, payments, the day it was counted on), so that it
-- needs no other projection's table. Internal: pos_api cannot read it.
CREATE TABLE rm_daily_sales_facts (
    merchant_id    uuid    NOT NULL,
    transaction_id uuid    NOT NULL,
    branch_id      uuid    NOT NULL,
    currency       text    NOT NULL,
    subtotal       bigint  NOT NULL DEFAULT 0,
    discount       bigint  NOT NULL DEFAULT 0,
    tax            bigint  NOT NULL DEFAULT 0,
    grand_total    bigint  NOT NULL DEFAULT 0,
    -- {"<payment id>": {"method", "applied", "status"}}.
    payments       jsonb   NOT NULL DEFAULT '{}',
    -- The business day the sale was counted on (NULL until paid), and the
    -- settled amounts by method counted then: a void reverses exactly these.
    paid_day       date,
    paid_by_method jsonb,
    PRIMARY KEY (merchant_id, transaction_id)
) PARTITION BY HASH (merchant_id);

-- Merchant settings as the read side needs them (the daily-sales projector
-- places events in the merchant's business day), written by
-- projections.MerchantSettings. A merchant without a row has the defaults
-- (IDR, Asia/Jakarta).
CREATE TABLE rm_merchant_settings (
    merchant_id          uuid        NOT NULL PRIMARY KEY,
    timezone             text        NOT NULL,
    currency             text        NOT NULL,
    prices_include_tax   boolean     NOT NULL,
    allow_negative_stock boolean     NOT NULL,
    version              bigint      NOT NULL,
    updated_at           timestamptz NOT NULL
);

-- +goose StatementBegin
DO $$
DECLARE
    t text;
    i int;
    part text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rm_transactions', 'rm_daily_sales', 'rm_daily_sales_facts'] LOOP
        FOR i IN 0..7 LOOP
            part := format('%s_p%s', t, i);
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS 8, REMAINDER %s)', part, t, i);
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', part);
            EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', part);
            EXECUTE format($p$CREATE POLICY merchant_isolation ON %I
                USING (merchant_id = NULLIF(current_setting('pos.merchant_id', true), '')::uuid)
                WITH CHECK (merchant_id = NULLIF(current_setting('pos.merchant_id', true), '')::uuid)$p$, part);
            EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', part);
        END LOOP;
    END LOOP;

    FOREACH t IN ARRAY ARRAY['rm_transactions', 'rm_daily_sales', 'rm_daily_sales_facts', 'rm_merchant_settings'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY merchant_isolation ON %I
            USING (merchant_id = NULLIF(current_setting('pos.merchant_id', true), '')::uuid)
            WITH CHECK (merchant_id = NULLIF(current_setting('pos.merchant_id', true), '')::uuid)$p$, t);
        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO pos_app', t);
    END LOOP;
END
$$;
-- +goose StatementEnd

GRANT SELECT ON rm_transactions, rm_daily_sales, rm_merchant_settings TO pos_api;

-- Bookkeeping of package projections. Not merchant-scoped (a partition
-- holds many merchants) and not readable by pos_api.

-- How far each projection has followed the feed, per merchant partition
-- (projections.Partition): the greatest position applied. Positions are
-- eventstore.Position (major, minor).
CREATE TABLE projection_checkpoints (
    projection text        NOT NULL,
    partition  integer     NOT NULL CHECK (partition >= 0),
    major      bigint      NOT NULL,
    minor      bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, partition)
);

-- The last stream version each projection applied: an event at or below it
-- is a redelivery (a no-op), one more than one above it reveals a gap that
-- the runner fills from the event store first.
CREATE TABLE projection_streams (
    projection  text   NOT NULL,
    stream_name text   NOT NULL,
    version     bigint NOT NULL CHECK (version >= 0),
    PRIMARY KEY (projection, stream_name)
);

REVOKE ALL ON projection_checkpoints, projection_streams FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_checkpoints, projection_streams TO pos_app;
