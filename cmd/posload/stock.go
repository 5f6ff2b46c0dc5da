package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"pos/api/auth"
	"pos/domain/stock"
)

// Stock for the sales. Checkout reserves every line's units, and a SKU never
// received is at zero stock (SPEC §4.2: checkout answers 422
// insufficient_stock unless the merchant allows negative stock), so before
// any sale posload receives a large quantity of every SKU it sells (the
// catalogue, or its first -skus entries) at every branch it sells at: one
// receipt per merchant, branch and SKU. The branches are new on every run,
// so the ledgers start at zero. A server without stock endpoints (an older
// build: 404 on POST /v1/stock/receipts) needs none; the setup is then
// skipped with a note on stderr.

const (
	receiptsPath = "/v1/stock/receipts"
	// defaultStockQty is the most units one receipt may carry: far more
	// than any run sells, and its value at any catalogue cost still fits
	// the server's money range.
	defaultStockQty = stock.MaxQty
	// stockWorkers is how many receipts are in flight at once.
	stockWorkers = 16
)

// unitCost is what posload's merchants pay for an item: 40% of its price.
func unitCost(it item) int64 { return it.price * 2 / 5 }

// mintTokens mints, for n new merchants, a CASHIER token each (the sales)
// and a MANAGER token of the same merchant (the stock receipts before them).
func mintTokens(secret []byte, n int) (cashiers, managers []string, err error) {
	now := time.Now()
	for i := range n {
		merchant := uuid.Must(uuid.NewV7())
		for _, m := range []struct {
			role auth.Role
			name string
			out  *[]string
		}{{auth.RoleCashier, "cashier", &cashiers}, {auth.RoleManager, "manager", &managers}} {
			tok, err := auth.Mint(secret, auth.Principal{Subject: fmt.Sprintf("posload-%s-%d", m.name, i+1),
				MerchantID: merchant, Role: m.role}, 8*time.Hour, now)
			if err != nil {
				return nil, nil, err
			}
			*m.out = append(*m.out, tok)
		}
	}
	return cashiers, managers, nil
}

// receipt is one POST /v1/stock/receipts of the setup.
type receipt struct {
	token  string
	branch uuid.UUID
	it     item
}

// receiveStock receives qty units of every SKU the sales sell at every branch
// of every merchant of the driver, merchant i's with stockTokens[i], before
// the first sale. One receipt goes alone first: a 404 or 405 answer means
// the server has no stock endpoints, and then receiveStock notes so on
// stderr and does nothing more. Any other refusal is an error (every sale
// would fail at checkout). qty 0 skips the setup.
func (d *driver) receiveStock(ctx context.Context, client *http.Client, stockTokens []string, qty int64, stderr io.Writer) error {
	if qty == 0 {
		return nil
	}
	if len(stockTokens) != len(d.tokens) {
		return fmt.Errorf("%d tokens for the stock receipts, want one per merchant (%d)", len(stockTokens), len(d.tokens))
	}
	var todo []receipt
	for m, branches := range d.branches {
		for _, b := range branches {
			for _, it := range d.items {
				todo = append(todo, receipt{token: stockTokens[m], branch: b, it: it})
			}
		}
	}
	if len(todo) == 0 {
		return nil
	}
	start := time.Now()
	status, body, err := d.sendReceipt(ctx, client, todo[0], qty)
	switch {
	case err != nil:
		return fmt.Errorf("stock receipt: %w", err)
	case status == http.StatusNotFound || status == http.StatusMethodNotAllowed:
		fmt.Fprintf(stderr, "posload: the server has no stock endpoints (POST %s answered %d): no stock received; sales run as before checkout reserved stock\n", receiptsPath, status)
		return nil
	case status != http.StatusCreated:
		return receiptRefused(todo[0], status, body)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan receipt)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
	}
	for range min(stockWorkers, len(todo)) {
		wg.Go(func() {
			for r := range jobs {
				status, body, err := d.sendReceipt(ctx, client, r, qty)
				switch {
				case err != nil:
					fail(fmt.Errorf("stock receipt: %w", err))
				case status != http.StatusCreated:
					fail(receiptRefused(r, status, body))
				}
			}
		})
	}
feed:
	for _, r := range todo[1:] {
		select {
		case jobs <- r:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "posload: received %d units of each of %d SKUs at %d branches of %d merchants (%d receipts in %.1fs)\n",
		qty, len(d.items), len(d.branches[0]), len(d.branches), len(todo), time.Since(start).Seconds())
	return nil
}

// sendReceipt posts one receipt and returns the status and body.
func (d *driver) sendReceipt(ctx context.Context, client *http.Client, r receipt, qty int64) (int, []byte, error) {
	b, err := json.Marshal(map[string]any{"branch_id": r.branch.String(), "sku": r.it.sku, "qty": qty, "unit_cost": unitCost(r.it)})
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.base+receiptsPath, bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Content-Type", "application/json")
	if d.keys {
		req.Header.Set("Idempotency-Key", uuid.NewString())
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func receiptRefused(r receipt, status int, body []byte) error {
	text := strings.TrimSpace(string(body))
	if len(text) > 500 {
		text = text[:500] + "…"
	}
	return fmt.Errorf("stock receipt of %s at branch %s refused: %d %s (the sales need stock: a MANAGER or ADMIN token, or a CASHIER one for all branches, may receive it)",
		r.it.sku, r.branch, status, text)
}
