package commands

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/google/uuid"

	"pos/domain/stock"
)

// stockCategory is the stream category of stock ledgers; the stream id is
// the ledger id (stock.LedgerID).
const stockCategory = "stock"

// ledgerKind is the executor's description of the ledger of key; the blank
// ledger needs its key, so there is one kind per ledger.
func ledgerKind(key stock.Key) kind[*stock.Ledger, stock.Event] {
	return kind[*stock.Ledger, stock.Event]{
		category:  stockCategory,
		schema:    stock.SchemaVersion,
		blank:     func() *stock.Ledger { return stock.New(key) },
		apply:     (*stock.Ledger).Apply,
		version:   (*stock.Ledger).Version,
		decode:    stock.Decode,
		typeOf:    stock.TypeName,
		clone:     (*stock.Ledger).Clone,
		serialize: true,
	}
}

// StockStream is the stream of the ledger of sku in branch of merchant.
func StockStream(merchant, branch uuid.UUID, sku string) string {
	return streamName(stockCategory, merchant, stock.LedgerID(merchant, branch, sku))
}

// LedgerStream is the stream of the ledger of that id of merchant (the id
// answers carry, and the audit paths take).
func LedgerStream(merchant, ledger uuid.UUID) string {
	return streamName(stockCategory, merchant, ledger)
}

// onLedger runs decide on the ledger of sku in branch (a ledger never written
// is at zero, not missing). With result, it returns the ledger as decided (a
// copy); without, nil, which spares copying a long ledger's history.
func (h *Handlers) onLedger(ctx context.Context, meta Meta, branch uuid.UUID, sku string, result bool, decide func(*stock.Ledger) ([]stock.Event, error)) (*stock.Ledger, Result, error) {
	if err := stock.CheckSKU(sku); err != nil {
		return nil, Result{}, err
	}
	key := stock.NewKey(meta.MerchantID, branch, sku)
	k := ledgerKind(key)
	k.copyResult = result
	return execute(ctx, h.ledgers(), k, meta, key.LedgerID.String(), decide)
}

// ledgers returns the handlers stock ledgers are written through: over
// Deps.Ledgers when set (see there).
func (h *Handlers) ledgers() *Handlers {
	if h.deps.Ledgers == nil {
		return h
	}
	return &Handlers{store: h.deps.Ledgers, deps: h.deps, outside: true}
}

// Ledger loads the ledger of sku in branch, for reading (a copy).
func (h *Handlers) Ledger(ctx context.Context, meta Meta, branch uuid.UUID, sku string) (*stock.Ledger, Result, error) {
	var out *stock.Ledger
	var res Result
	err := h.readLedger(ctx, meta, branch, sku, func(l *stock.Ledger, r Result) {
		out, res = l.Clone(), r
	})
	return out, res, err
}

// readLedger loads the ledger of sku in branch, from the store (a snapshot
// only once the store confirms it), and lets read look at it while no
// command of this process changes it; read must not keep it.
func (h *Handlers) readLedger(ctx context.Context, meta Meta, branch uuid.UUID, sku string, read func(*stock.Ledger, Result)) error {
	if err := stock.CheckSKU(sku); err != nil {
		return err
	}
	key := stock.NewKey(meta.MerchantID, branch, sku)
	k := ledgerKind(key)
	lh := h.ledgers()
	stream := StockStream(meta.MerchantID, branch, sku)
	inPlace := owned(lh, k)
	if k.serialize {
		defer lh.deps.Locks.lock(stream)()
	}
	l, pos, _, err := load(ctx, lh.store, lh.deps.Snapshots, k, stream, inPlace, false)
	if err != nil {
		return err
	}
	read(l, Result{Version: l.Version(), Position: pos})
	return nil
}

// allowNegativeStock reads the merchant's setting. A checkout a till ran
// offline may go negative only if the setting allowed it both then and now:
// a till can date a command up to 30 days back, and must not thereby pick
// a rule an ADMIN has since tightened.
func (h *Handlers) allowNegativeStock(ctx context.Context, meta Meta) (bool, error) {
	s, _, err := h.Settings(ctx, meta)
	if err != nil {
		return false, err
	}
	now := s.Values().AllowNegativeStock
	if meta.At.IsZero() {
		return now, nil
	}
	return now && s.ValuesAt(meta.At).AllowNegativeStock, nil
}

// ShortageError reports every ledger a command found short; it unwraps to
// stock.ErrInsufficientStock (422 insufficient_stock) and lists the SKUs.
type ShortageError struct {
	Shortages []*stock.ShortageError
}

func (e *ShortageError) Error() string {
	return "commands: insufficient stock of " + strings.Join(e.SKUs(), ", ")
}

// Unwrap lets errors.Is match stock.ErrInsufficientStock.
func (e *ShortageError) Unwrap() error { return stock.ErrInsufficientStock }

// SKUs returns the short SKUs, sorted and without repeats.
func (e *ShortageError) SKUs() []string {
	skus := make([]string, 0, len(e.Shortages))
	for _, s := range e.Shortages {
		skus = append(skus, s.SKU)
	}
	slices.Sort(skus)
	return slices.Compact(skus)
}

// asShortage wraps a ledger's shortage into a ShortageError; other errors
// pass through.
func asShortage(err error) error {
	var s *stock.ShortageError
	if errors.As(err, &s) {
		return &ShortageError{Shortages: []*stock.ShortageError{s}}
	}
	return err
}
