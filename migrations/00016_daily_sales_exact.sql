-- Daily-sales figures as exact numeric sums. Each sale's figures are at
-- most 2^53−1 (the API's money range), but a day of enormous sales could
-- sum past bigint's range, and the failed upsert would stop every
-- projection of the merchants sharing the partition. The queries hold what
-- they answer within ±(2^53−1) (queries/daily_sales.go); the table keeps
-- the exact sums, so a void or a refund that follows takes off exactly what
-- it added. rm_jsonb_add (00015) already sums by_method in numeric.

-- +goose Up
ALTER TABLE rm_daily_sales
    ALTER COLUMN gross TYPE numeric,
    ALTER COLUMN discounts TYPE numeric,
    ALTER COLUMN tax TYPE numeric,
    ALTER COLUMN net TYPE numeric,
    ALTER COLUMN refunds TYPE numeric;
