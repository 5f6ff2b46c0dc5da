-- Stock read models (SPEC §4.2, §5: GET /v1/stock, GET /v1/stock/{sku}/movements),
-- written by projections.Stock from the stock ledgers' events (domain/stock),
-- as role pos_app, and read by package queries as role pos_api. Like every
-- read model they can be dropped and rebuilt from the event store.
--
-- Tenancy, roles and partitions follow 00006_read_models.sql exactly: hash
-- partitions by merchant (8), row-level security ENABLEd and FORCEd with the
-- merchant_isolation policy on the parents and on every partition (an unset
-- or empty pos.merchant_id matches no row), nothing granted to PUBLIC,
-- SELECT/INSERT/UPDATE/DELETE to pos_app, SELECT to pos_api on the public
-- tables only.
--
-- SKUs are compared and ordered byte-wise (COLLATE "C"): a SKU is an
-- identifier, and keyset paging needs an order that no locale changes.

-- +goose Up

-- One row per ledger (merchant, branch, SKU): the ledger aggregate's state
-- after the events applied so far. available = on_hand - reserved is left to
-- the query. on_hand (and so available) is negative only when the merchant
-- allows negative stock; avg_cost is the moving-average unit cost in minor
-- units. version is the ledger's stream version (the aggregate's Version),
-- pos_major/pos_minor the feed position of its last event, updated_at that
-- event's recorded time.
CREATE TABLE rm_stock_levels (
    merchant_id uuid             NOT NULL,
    ledger_id   uuid             NOT NULL,
    branch_id   uuid             NOT NULL,
    sku         text COLLATE "C" NOT NULL,
    on_hand     bigint           NOT NULL DEFAULT 0,
    reserved    bigint           NOT NULL DEFAULT 0,
    avg_cost    bigint           NOT NULL DEFAULT 0,
    version     bigint           NOT NULL,
    pos_major   bigint           NOT NULL,
    pos_minor   bigint           NOT NULL,
    updated_at  timestamptz      NOT NULL,
    PRIMARY KEY (merchant_id, ledger_id)
) PARTITION BY HASH (merchant_id);

-- GET /v1/stock lists levels ordered by (branch_id, sku), keyset-paged: one
-- index serves the whole merchant and one branch, the other one SKU across
-- branches.
CREATE UNIQUE INDEX rm_stock_levels_branch_sku_idx ON rm_stock_levels (merchant_id, branch_id, sku);
CREATE INDEX rm_stock_levels_sku_idx ON rm_stock_levels (merchant_id, sku, branch_id);

-- One row per ledger event: the stock card. version is the event's stream
-- version, at the event's own `at` (the time the movement happened).
--
-- kind and qty, per event type:
--   StockReceived        receipt       +qty            unit_cost: the receipt's cost      source_id: receipt id
--   StockAdjusted        adjustment    ±delta          unit_cost: NULL                    source_id: adjustment id
--   StockReserved        reserve       see below       unit_cost: NULL                    source_id: transaction id
--   ReservationReleased  release       -units released unit_cost: NULL                    source_id: transaction id
--   StockSold            sale          -qty            unit_cost: the average at the sale source_id: transaction id
--   StockReturned        return        +qty            unit_cost: the sale's unit cost    source_id: refund id (the transaction id for a void)
--   StockTransferredOut  transfer_out  -qty            unit_cost: the average sent at     source_id: transfer id
--   StockTransferredIn   transfer_in   +qty            unit_cost: the cost received at    source_id: transfer id
--
-- qty is signed, + in and - out: for receipt, adjustment, sale, return,
-- transfer_out and transfer_in it is the change of on hand (their sum is
-- on_hand); for reserve and release it is the change of reserved units (on
-- hand does not move): a reserve holds +qty, a reservation that replaces the
-- transaction's open one (a checkout retried after its lines changed) shows
-- the difference, and a release gives -qty back. A sale consumes the
-- transaction's open reservation without a release row of its own.
CREATE TABLE rm_stock_movements (
    merchant_id uuid             NOT NULL,
    ledger_id   uuid             NOT NULL,
    branch_id   uuid             NOT NULL,
    sku         text COLLATE "C" NOT NULL,
    version     bigint           NOT NULL,
    kind        text             NOT NULL CHECK (kind IN ('receipt', 'adjustment', 'reserve', 'release', 'sale', 'return', 'transfer_out', 'transfer_in')),
    qty         bigint           NOT NULL,
    unit_cost   bigint,
    source_id   uuid             NOT NULL,
    at          timestamptz      NOT NULL,
    PRIMARY KEY (merchant_id, ledger_id, version)
) PARTITION BY HASH (merchant_id);

-- GET /v1/stock/{sku}/movements pages newest first, keyset (at, ledger_id,
-- version) descending, across branches or for one.
CREATE INDEX rm_stock_movements_sku_idx ON rm_stock_movements (merchant_id, sku, at DESC, ledger_id DESC, version DESC);
CREATE INDEX rm_stock_movements_branch_idx ON rm_stock_movements (merchant_id, sku, branch_id, at DESC, ledger_id DESC, version DESC);

-- The open reservations, one per ledger and transaction (what a release or
-- a sale takes back out of reserved); a row is deleted when its reservation
-- is released or sold. Internal to projections.Stock: pos_api cannot read it.
CREATE TABLE rm_stock_reservations (
    merchant_id    uuid        NOT NULL,
    ledger_id      uuid        NOT NULL,
    transaction_id uuid        NOT NULL,
    qty            bigint      NOT NULL,
    reserved_at    timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, ledger_id, transaction_id)
) PARTITION BY HASH (merchant_id);

-- +goose StatementBegin
DO $$
DECLARE
    t text;
    i int;
    part text;
BEGIN
    FOREACH t IN ARRAY ARRAY['rm_stock_levels', 'rm_stock_movements', 'rm_stock_reservations'] LOOP
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

GRANT SELECT ON rm_stock_levels, rm_stock_movements TO pos_api;
