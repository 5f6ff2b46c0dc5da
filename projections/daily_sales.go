package projections

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // business days must not depend on the host's zoneinfo

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"pos/domain/settings"
	"pos/domain/transaction"
	"pos/eventstore"
)

// DailySales projects sales into rm_daily_sales: per branch, business day
// and currency, the number of sales, gross (the subtotal before discounts),
// discounts, tax, net (grand total − tax, the pre-tax net in both tax modes),
// refunds, and the settled payments by method.
//
// Delivery is at least once; the Runner applies each event exactly once, in
// stream order, and this projector relies on it (its upserts add deltas).
//
// Which day:
//   - a sale counts on the business day of its TransactionPaid (the event's
//     time in the merchant's time zone), with its frozen totals and the
//     payments settled by then;
//   - a refund counts on its own business day (RefundIssued's time), in the
//     refunds column only;
//   - a void of a paid sale takes the sale back out of the day it was counted
//     on (a voided sale is no sale), whatever day the void happens.
//
// The merchant's time zone is read from rm_merchant_settings (Asia/Jakarta
// while the merchant has no row), which MerchantSettings writes: run both in
// the same Runner, or at least feed MerchantSettings the settings events
// first. A change of time zone applies to the events after it in the feed
// (the order the store recorded them), each dated by its own time in that
// zone; days already counted are not moved. So a sale synced from offline
// after the change, though rung up before it, is dated in the new zone: the
// projection keeps the current zone only, not the history of zones a
// rule by time would need. ApplyBatch reads the zone once for all its events,
// which is right only because the Runner ends a batch at every settings
// event: a caller of its own must do the same.
//
// What it needs of a sale between its events (branch, currency, frozen
// totals, payments, the day it was counted on) it keeps in its own table,
// rm_daily_sales_facts, so it depends on no other projector's table but the
// settings.
type DailySales struct {
	mu    sync.Mutex
	zones map[string]*time.Location
}

// NewDailySales returns the daily-sales projector.
func NewDailySales() *DailySales { return &DailySales{zones: map[string]*time.Location{}} }

// Name returns "daily_sales".
func (*DailySales) Name() string { return "daily_sales" }

// Tables returns the read-model tables it writes (Tabled).
func (*DailySales) Tables() []string { return []string{"rm_daily_sales", "rm_daily_sales_facts"} }

// Reads returns the settings projector: the business day of an event is
// in the time zone in force when the event was recorded (see DailySales).
func (*DailySales) Reads() []string { return []string{MerchantSettings{}.Name()} }

// Categories returns the transaction category.
func (*DailySales) Categories() []string { return []string{TransactionCategory} }

// Handles reports true for the events that change a sale's branch, totals,
// payments or figures of the day.
func (*DailySales) Handles(eventType string) bool {
	switch eventType {
	case "TransactionOpened", "CheckedOut", "PaymentAdded", "PaymentConfirmed", "PaymentDeclined",
		"TransactionPaid", "TransactionVoided", "RefundIssued":
		return true
	}
	return false
}

// saleFacts is one rm_daily_sales_facts row in memory.
type saleFacts struct {
	id                             uuid.UUID
	branch                         uuid.UUID
	currency                       string
	subtotal, discount, tax, grand int64
	payments                       map[string]factPayment
	// paidDay ("2006-01-02") and paidByMethod are NULL (nil) while the sale
	// is not counted on a day.
	paidDay      *string
	paidByMethod map[string]int64
	// changed reports that the batch changed the row, which must be
	// written back.
	changed bool
}

type factPayment struct {
	Method  string `json:"method"`
	Applied int64  `json:"applied"`
	Status  string `json:"status"`
}

// delta is a change to one rm_daily_sales row; updatedAt is the recorded
// time of the latest event in it.
type delta struct {
	count, gross, discounts, tax, net, refunds int64
	byMethod                                   map[string]int64
	updatedAt                                  time.Time
}

// dayKey names one rm_daily_sales row of the merchant.
type dayKey struct {
	branch        uuid.UUID
	day, currency string
}

// Apply implements Projector as ApplyBatch of one event, so that a live
// delivery and a replay share one code path.
func (d *DailySales) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	return d.ApplyBatch(ctx, tx, []eventstore.RecordedEvent{e})
}

// ApplyBatch implements BatchProjector in at most four statements, however
// many events: it reads the facts of every sale the events touch (one
// SELECT) and, when an event needs a business day, the merchant's time zone
// (once: the Runner starts a new batch at every settings event); it applies
// the events in memory in order, summing the changes to each day; then it
// writes the changed facts (one upsert) and adds the sums to the days (one
// upsert). A bad event fails the whole batch before anything is written.
//
// The events must be of one merchant, each once and in stream order; the
// Runner sees to it (redeliveries included). The days get deltas added: an
// event applied twice would count twice.
func (d *DailySales) ApplyBatch(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error {
	if len(events) == 0 {
		return nil
	}
	// A day's deltas are summed in int64 before the upsert adds them to
	// the table's exact numeric sums. An event moves a figure by at most
	// 2^53−1, so up to 1,024 of them never overflow: longer batches go a
	// chunk at a time.
	if len(events) > maxSummed {
		if err := d.ApplyBatch(ctx, tx, events[:maxSummed]); err != nil {
			return err
		}
		return d.ApplyBatch(ctx, tx, events[maxSummed:])
	}
	merchant, ids, decoded, err := decodeBatch(ctx, events)
	if err != nil {
		return err
	}
	facts, tz, err := loadFacts(ctx, tx, merchant, distinct(ids))
	if err != nil {
		return err
	}
	var loc *time.Location // loaded at the first event that needs it
	businessDay := func(at time.Time) (string, error) {
		if loc == nil {
			l, err := d.zone(tz)
			if err != nil {
				return "", err
			}
			loc = l
		}
		return at.In(loc).Format(time.DateOnly), nil
	}
	days := map[dayKey]*delta{}
	addDay := func(k dayKey, c delta) {
		sum := days[k]
		if sum == nil {
			sum = &delta{byMethod: map[string]int64{}, updatedAt: c.updatedAt}
			days[k] = sum
		}
		sum.count += c.count
		sum.gross += c.gross
		sum.discounts += c.discounts
		sum.tax += c.tax
		sum.net += c.net
		sum.refunds += c.refunds
		for m, v := range c.byMethod {
			sum.byMethod[m] += v
		}
		if c.updatedAt.After(sum.updatedAt) {
			sum.updatedAt = c.updatedAt
		}
	}
	var changed []*saleFacts // in order of first change
	for i, ev := range decoded {
		e, id := events[i], ids[i]
		f := facts[id]
		// need returns the sale's facts, or errNoRow.
		need := func() (*saleFacts, error) {
			if f == nil {
				return nil, fmt.Errorf("transaction %s: %w", id, errNoRow)
			}
			return f, nil
		}
		var err error
		switch ev := ev.(type) {
		case transaction.TransactionOpened:
			if f != nil {
				err = fmt.Errorf("transaction %s: %w", id, errOpenedTwice)
				break
			}
			f = &saleFacts{id: id, branch: ev.BranchID, currency: string(ev.Currency), payments: map[string]factPayment{}}
			facts[id] = f

		case transaction.CheckedOut:
			if f, err = need(); err == nil {
				f.currency, f.subtotal, f.discount, f.tax, f.grand = string(ev.Currency), int64(ev.Subtotal), int64(ev.Discount), int64(ev.Tax), int64(ev.GrandTotal)
			}

		case transaction.PaymentAdded:
			if f, err = need(); err == nil {
				f.payments[ev.PaymentID.String()] = factPayment{Method: string(ev.Method), Applied: int64(ev.Applied), Status: string(ev.Status)}
			}

		case transaction.PaymentConfirmed:
			err = f.setPaymentStatus(ev.PaymentID, transaction.PaymentStatusSettled)

		case transaction.PaymentDeclined:
			err = f.setPaymentStatus(ev.PaymentID, transaction.PaymentStatusDeclined)

		case transaction.TransactionPaid:
			// The sale counts on the day it is paid, with the payments
			// settled by then; the facts remember both for a void.
			if f, err = need(); err != nil {
				break
			}
			var day string
			if day, err = businessDay(ev.At); err != nil {
				break
			}
			byMethod := map[string]int64{}
			for _, p := range f.payments {
				if p.Status == string(transaction.PaymentStatusSettled) {
					byMethod[p.Method] += p.Applied
				}
			}
			addDay(dayKey{f.branch, day, f.currency}, delta{
				count: 1, gross: f.subtotal, discounts: f.discount, tax: f.tax, net: f.grand - f.tax, byMethod: byMethod, updatedAt: e.RecordedAt,
			})
			f.paidDay, f.paidByMethod = &day, byMethod

		case transaction.TransactionVoided:
			if ev.PreviousStatus != transaction.StatusPaid {
				continue // never counted; the facts stay as they are
			}
			if f, err = need(); err != nil {
				break
			}
			if f.paidDay == nil {
				err = fmt.Errorf("transaction %s: void of a paid sale that was never counted", id)
				break
			}
			neg := make(map[string]int64, len(f.paidByMethod))
			for m, v := range f.paidByMethod {
				neg[m] = -v
			}
			addDay(dayKey{f.branch, *f.paidDay, f.currency}, delta{
				count: -1, gross: -f.subtotal, discounts: -f.discount, tax: -f.tax, net: -(f.grand - f.tax), byMethod: neg, updatedAt: e.RecordedAt,
			})
			f.paidDay, f.paidByMethod = nil, nil

		case transaction.RefundIssued:
			if f, err = need(); err != nil {
				break
			}
			var day string
			if day, err = businessDay(ev.At); err != nil {
				break
			}
			addDay(dayKey{f.branch, day, f.currency}, delta{refunds: int64(ev.Amount), updatedAt: e.RecordedAt})
			continue // the facts are unchanged

		default:
			continue // not a figure of the day
		}
		if err != nil {
			return fmt.Errorf("%s %s@%d: %w", e.Type, e.Stream, e.Version, err)
		}
		if !f.changed {
			f.changed = true
			changed = append(changed, f)
		}
	}
	if err := saveFacts(ctx, tx, merchant, changed); err != nil {
		return err
	}
	return addDays(ctx, tx, merchant, days)
}

// setPaymentStatus sets the status of one of the sale's payments; a sale
// without facts or without that payment is errUnknownID.
func (f *saleFacts) setPaymentStatus(payment uuid.UUID, status transaction.PaymentStatus) error {
	if f != nil {
		if p, ok := f.payments[payment.String()]; ok {
			p.Status = string(status)
			f.payments[payment.String()] = p
			return nil
		}
	}
	return fmt.Errorf("payment %s: %w", payment, errUnknownID)
}

func wrap(what string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// loadFacts reads the merchant's facts of ids, and its time zone, in one
// statement (or takes them preloaded); ids without a row have no entry.
func loadFacts(ctx context.Context, tx pgx.Tx, merchant uuid.UUID, ids []uuid.UUID) (map[uuid.UUID]*saleFacts, string, error) {
	if f, ok := takePreload[uuid.UUID, loadedFacts](ctx, merchant, ids); ok {
		return f.facts, f.tz, nil
	}
	rows, err := tx.Query(ctx, factsSQL, merchant, uuidArg(ids...))
	if err != nil {
		return nil, "", fmt.Errorf("read rm_daily_sales_facts: %w", err)
	}
	f, err := scanFacts(rows)
	return f.facts, f.tz, err
}

// preload implements preloader: the facts of the events' sales, and the
// merchant's time zone.
func (*DailySales) preload(_ context.Context, b *pgx.Batch, merchant uuid.UUID, events []eventstore.RecordedEvent) any {
	ids, ok := aggregatesOf(merchant, events)
	if !ok {
		return nil // ApplyBatch refuses the batch
	}
	return newPreload[uuid.UUID, loadedFacts](merchant, ids).queue(b, scanFacts, factsSQL, merchant, uuidArg(ids...))
}

// loadedFacts is what factsSQL reads: facts by sale, and the time zone.
type loadedFacts struct {
	facts map[uuid.UUID]*saleFacts
	tz    string
}

// factsSQL reads a merchant's facts of some sales, and its time zone in the
// same round trip: every row carries it, and the one row of a batch without
// facts (transaction_id NULL) carries it alone. NULL while the merchant has
// no settings row: settings.Defaults' zone.
const factsSQL = `SELECT f.transaction_id, f.branch_id, f.currency, f.subtotal, f.discount, f.tax, f.grand_total, f.payments,
            f.paid_day, f.paid_by_method, s.timezone
        FROM (SELECT 1) AS one
        LEFT JOIN rm_merchant_settings s ON s.merchant_id = $1
        LEFT JOIN rm_daily_sales_facts f ON f.merchant_id = $1 AND f.transaction_id = ANY($2::uuid[])`

func scanFacts(rows pgx.Rows) (loadedFacts, error) {
	defer rows.Close()
	out := loadedFacts{facts: map[uuid.UUID]*saleFacts{}, tz: settings.Defaults().Timezone}
	for rows.Next() {
		var (
			id, branch                     *[16]byte
			currency                       *string
			subtotal, discount, tax, grand *int64
			payments, paidByMethod         []byte
			paidDay                        *time.Time
			zone                           *string
		)
		if err := rows.Scan(&id, &branch, &currency, &subtotal, &discount, &tax, &grand, &payments, &paidDay, &paidByMethod, &zone); err != nil {
			return loadedFacts{}, fmt.Errorf("read rm_daily_sales_facts: %w", err)
		}
		if zone != nil {
			out.tz = *zone
		}
		if id == nil {
			continue // no facts: the zone alone
		}
		f := &saleFacts{id: uuid.UUID(*id), branch: uuid.UUID(*branch), currency: *currency,
			subtotal: *subtotal, discount: *discount, tax: *tax, grand: *grand}
		if err := json.Unmarshal(payments, &f.payments); err != nil {
			return loadedFacts{}, fmt.Errorf("decode rm_daily_sales_facts payments of %s: %w", f.id, err)
		}
		if f.payments == nil { // a JSON null
			f.payments = map[string]factPayment{}
		}
		if paidDay != nil {
			day := paidDay.Format(time.DateOnly)
			f.paidDay = &day
		}
		if paidByMethod != nil {
			if err := json.Unmarshal(paidByMethod, &f.paidByMethod); err != nil {
				return loadedFacts{}, fmt.Errorf("decode rm_daily_sales_facts paid_by_method of %s: %w", f.id, err)
			}
		}
		out.facts[f.id] = f
	}
	if err := rows.Err(); err != nil {
		return loadedFacts{}, fmt.Errorf("read rm_daily_sales_facts: %w", err)
	}
	return out, nil
}

// saveFacts writes facts in one upsert: a sale opened in the batch is
// inserted, any other updated (its branch never changes). Each row is in it
// once, as ON CONFLICT requires.
func saveFacts(ctx context.Context, tx pgx.Tx, merchant uuid.UUID, facts []*saleFacts) error {
	if len(facts) == 0 {
		return nil
	}
	n := len(facts)
	var (
		ids, branches                       = make([][16]byte, n), make([][16]byte, n)
		currencies, payments                = make([]string, n), make([]string, n)
		subtotals, discounts, taxes, grands = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		paidDays, paidByMethods             = make([]*string, n), make([]*string, n)
	)
	for i, f := range facts {
		var err error
		if payments[i], err = encodeJSON(f.payments); err != nil {
			return fmt.Errorf("encode rm_daily_sales_facts payments of %s: %w", f.id, err)
		}
		if f.paidByMethod != nil {
			bm, err := encodeJSON(f.paidByMethod)
			if err != nil {
				return fmt.Errorf("encode rm_daily_sales_facts paid_by_method of %s: %w", f.id, err)
			}
			paidByMethods[i] = &bm
		}
		ids[i], branches[i], currencies[i] = f.id, f.branch, f.currency
		subtotals[i], discounts[i], taxes[i], grands[i] = f.subtotal, f.discount, f.tax, f.grand
		paidDays[i] = f.paidDay
	}
	_, err := tx.Exec(ctx, `
        INSERT INTO rm_daily_sales_facts AS f (merchant_id, transaction_id, branch_id, currency, subtotal, discount, tax, grand_total,
            payments, paid_day, paid_by_method)
        SELECT $1::uuid, v.id, v.branch, v.currency, v.subtotal, v.discount, v.tax, v.grand, v.payments::jsonb, v.paid_day::date, v.paid_by_method::jsonb
        FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::text[])
            AS v(id, branch, currency, subtotal, discount, tax, grand, payments, paid_day, paid_by_method)
        ON CONFLICT (merchant_id, transaction_id) DO UPDATE SET currency = excluded.currency, subtotal = excluded.subtotal,
            discount = excluded.discount, tax = excluded.tax, grand_total = excluded.grand_total, payments = excluded.payments,
            paid_day = excluded.paid_day, paid_by_method = excluded.paid_by_method`,
		merchant, ids, branches, currencies, subtotals, discounts, taxes, grands, payments, paidDays, paidByMethods)
	return wrap("upsert rm_daily_sales_facts", err)
}

// addDays adds each delta to its day's row, creating it when needed, in one
// atomic statement: other transactions may add to the same days
// concurrently (sales of one day are in many streams). The rows are taken in
// key order so that two such statements do not wait on each other
// crosswise; a deadlock still possible is retried by the Runner.
func addDays(ctx context.Context, tx pgx.Tx, merchant uuid.UUID, days map[dayKey]*delta) error {
	if len(days) == 0 {
		return nil
	}
	keys := slices.SortedFunc(maps.Keys(days), func(a, b dayKey) int {
		return cmp.Or(bytes.Compare(a.branch[:], b.branch[:]), strings.Compare(a.day, b.day), strings.Compare(a.currency, b.currency))
	})
	n := len(keys)
	var (
		branches                                   = make([][16]byte, n)
		businessDays, currencies, byMethods        = make([]string, n), make([]string, n), make([]string, n)
		counts, gross, discounts, taxes, net, refs = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		updatedAt                                  = make([]time.Time, n)
	)
	for i, k := range keys {
		d := days[k]
		// As rm_jsonb_add leaves it: methods summing to 0 dropped. A new row
		// then needs no call of it, which costs a plan per statement.
		maps.DeleteFunc(d.byMethod, func(_ string, v int64) bool { return v == 0 })
		bm, err := encodeJSON(d.byMethod)
		if err != nil {
			return fmt.Errorf("encode rm_daily_sales by_method: %w", err)
		}
		branches[i], businessDays[i], currencies[i], byMethods[i] = k.branch, k.day, k.currency, bm
		counts[i], gross[i], discounts[i], taxes[i], net[i], refs[i] = d.count, d.gross, d.discounts, d.tax, d.net, d.refunds
		updatedAt[i] = d.updatedAt
	}
	_, err := tx.Exec(ctx, `
        INSERT INTO rm_daily_sales AS d (merchant_id, branch_id, business_day, currency, count, gross, discounts, tax, net, refunds, by_method, updated_at)
        SELECT $1::uuid, v.branch, v.day::date, v.currency, v.count, v.gross, v.discounts, v.tax, v.net, v.refunds,
            v.by_method::jsonb, v.updated_at
        FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
            $11::text[], $12::timestamptz[])
            AS v(branch, day, currency, count, gross, discounts, tax, net, refunds, by_method, updated_at)
        ON CONFLICT (merchant_id, branch_id, business_day, currency) DO UPDATE SET
            count = d.count + excluded.count, gross = d.gross + excluded.gross, discounts = d.discounts + excluded.discounts,
            tax = d.tax + excluded.tax, net = d.net + excluded.net, refunds = d.refunds + excluded.refunds,
            by_method = public.rm_jsonb_add(d.by_method, excluded.by_method), updated_at = greatest(d.updated_at, excluded.updated_at)`,
		merchant, branches, businessDays, currencies, counts, gross, discounts, taxes, net, refs, byMethods, updatedAt)
	return wrap("upsert rm_daily_sales", err)
}

// maxSummed is the most events whose deltas ApplyBatch sums in int64.
const maxSummed = 1000

func (d *DailySales) zone(name string) (*time.Location, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if loc, ok := d.zones[name]; ok {
		return loc, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("merchant time zone %q: %w", name, err)
	}
	d.zones[name] = loc
	return loc, nil
}
