package pgtx

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// Retryable reports a deadlock or serialization failure: PostgreSQL rolled
// the transaction back, and it may succeed when run again.
func Retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}
