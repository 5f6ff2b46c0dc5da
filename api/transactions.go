package api

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"pos/commands"
	"pos/domain/money"
	"pos/domain/settings"
	"pos/domain/transaction"
)

// meta turns the authenticated caller and request headers into command
// metadata. The merchant comes from the token only.
// seedOf is the id seed the idempotency middleware gave r, if any.
func seedOf(r *http.Request) uuid.UUID {
	seed, _ := r.Context().Value(idSeedKey{}).(uuid.UUID)
	return seed
}

func (s *Server) meta(r *http.Request) (commands.Meta, error) {
	p := principalOf(r)
	im, err := ifMatch(r)
	if err != nil {
		return commands.Meta{}, err
	}
	correlation := r.Header.Get("X-Correlation-ID")
	if _, err := uuid.Parse(correlation); err != nil {
		correlation = uuid.NewString()
	}
	traceparent, tracestate := r.Header.Get("traceparent"), r.Header.Get("tracestate")
	if s.tel != nil {
		// The request's own span, a child of the caller's: events point at
		// the request that wrote them.
		traceparent, tracestate = s.tel.Inject(r.Context())
	}
	traceparent, tracestate = traceContext(traceparent, tracestate)
	return commands.Meta{
		MerchantID:    p.MerchantID,
		Actor:         p.Subject,
		Role:          string(p.Role),
		CorrelationID: correlation,
		CausationID:   r.Header.Get("Idempotency-Key"),
		IDSeed:        seedOf(r),
		At:            occurredAt(r),
		TraceParent:   traceparent,
		TraceState:    tracestate,
		BranchIDs:     p.BranchIDs,
		IfMatch:       im,
	}, nil
}

// traceContext keeps a well-formed W3C traceparent and as much of
// tracestate as fits the event store's metadata limit, dropping entries from
// the end as W3C allows: caller-supplied headers must never make a command
// fail.
func traceContext(traceparent, tracestate string) (string, string) {
	if !traceparentRE.MatchString(traceparent) {
		return "", ""
	}
	const maxState = 512
	for len(tracestate) > maxState {
		i := strings.LastIndexByte(tracestate, ',')
		if i < 0 {
			tracestate = ""
			break
		}
		tracestate = tracestate[:i]
	}
	if !utf8.ValidString(tracestate) || strings.ContainsFunc(tracestate, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		tracestate = ""
	}
	return traceparent, tracestate
}

var traceparentRE = regexp.MustCompile(`^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

func (s *Server) handlers(r *http.Request) *commands.Handlers { return s.commands(s.storeFor(r)) }

// parseID reads an optional client-supplied UUID body field.
func parseID(field string, v *string) (uuid.UUID, error) {
	if v == nil {
		return uuid.Nil, nil
	}
	id, err := uuid.Parse(*v)
	if err != nil || id == uuid.Nil {
		return uuid.Nil, invalid(field+" must be a UUID", FieldError{Field: field, Code: "invalid"})
	}
	return id, nil
}

func requiredID(field, v string) (uuid.UUID, error) {
	if v == "" {
		return uuid.Nil, invalid(field+" is required", FieldError{Field: field, Code: "required"})
	}
	return parseID(field, &v)
}

func parseCurrency(v string) (money.Currency, error) {
	c, err := money.ParseCurrency(v)
	if err != nil {
		return "", invalid("currency must be an ISO 4217 code", FieldError{Field: "currency", Code: "invalid"})
	}
	return c, nil
}

func optionalCurrency(v *string) (money.Currency, error) {
	if v == nil {
		return "", nil
	}
	return parseCurrency(*v)
}

// transactionCommand decodes a request and runs a transaction command,
// answering the transaction's state after it.
func (s *Server) transactionCommand(w http.ResponseWriter, r *http.Request, status int, dst any,
	run func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error),
	extra func(*transaction.Transaction, *transactionAnswer)) {
	id, err := pathUUID(r, "id")
	if err == nil {
		err = decode(w, r, dst)
	}
	var m commands.Meta
	if err == nil {
		m, err = s.meta(r)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	t, res, err := run(s.handlers(r), m, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.answerTransaction(w, status, t, res, extra)
}

func (s *Server) answerTransaction(w http.ResponseWriter, status int, t *transaction.Transaction, res commands.Result, extra func(*transaction.Transaction, *transactionAnswer)) {
	tot := t.Totals()
	a := transactionAnswer{
		commandResult: commandResult{ID: t.ID().String(), Version: res.Version, Position: res.Position.String()},
		Code:          t.Code(),
		Status:        string(t.Status()),
		Totals: totalsView{Currency: string(tot.Currency), Subtotal: int64(tot.Subtotal), Discount: int64(tot.Discount),
			Tax: int64(tot.Tax), GrandTotal: int64(tot.GrandTotal)},
		Paid:     int64(t.Paid()),
		Due:      int64(t.Due()),
		Refunded: int64(t.Refunded()),
	}
	if extra != nil {
		extra(t, &a)
	}
	writeCommand(w, status, res.Version, res.Position, a)
}

func (s *Server) openTransaction(w http.ResponseWriter, r *http.Request) {
	var req openTransactionRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	branch, err := requiredID("branch_id", req.BranchID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cmd := commands.OpenTransaction{BranchID: branch}
	if cmd.TransactionID, err = parseID("transaction_id", req.TransactionID); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Currency != nil {
		if cmd.Currency, err = parseCurrency(*req.Currency); err == nil && !cmd.Currency.InUse() {
			err = invalid("currency must be in use as legal tender", FieldError{Field: "currency", Code: "invalid"})
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
	}
	m, err := s.meta(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	t, res, err := s.handlers(r).OpenTransaction(r.Context(), m, cmd)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/transactions/"+t.ID().String())
	s.answerTransaction(w, http.StatusCreated, t, res, nil)
}

func (s *Server) addItem(w http.ResponseWriter, r *http.Request) {
	var req addItemRequest
	var lineID uuid.UUID
	s.transactionCommand(w, r, http.StatusCreated, &req, func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		var err error
		if req.LineID != "" {
			if lineID, err = parseID("line_id", &req.LineID); err != nil {
				return nil, commands.Result{}, err
			}
		}
		if req.UnitPrice == nil {
			return nil, commands.Result{}, invalid("unit_price is required", FieldError{Field: "unit_price", Code: "required"})
		}
		rate := int64(0)
		if req.TaxRateBps != nil {
			rate = *req.TaxRateBps
		}
		cur, err := optionalCurrency(req.Currency)
		if err != nil {
			return nil, commands.Result{}, err
		}
		return h.AddItem(r.Context(), m, id, transaction.AddItem{LineID: lineID, SKU: req.SKU, Name: req.Name, Qty: req.Qty,
			UnitPrice: money.Amount(*req.UnitPrice), TaxRateBps: rate, Currency: cur})
	}, func(t *transaction.Transaction, a *transactionAnswer) {
		// The command's line is the newest; its id is the client's, or
		// the one the handler generated.
		lines := t.Lines()
		a.LineID = lines[len(lines)-1].LineID.String()
	})
}

func (s *Server) removeItem(w http.ResponseWriter, r *http.Request) {
	// No body is expected; one sent must still be JSON (415) and name no
	// field (400), as with an Idempotency-Key, whose middleware reads it.
	s.transactionCommand(w, r, http.StatusOK, &struct{}{}, func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		line, err := pathUUID(r, "line_id")
		if err != nil {
			return nil, commands.Result{}, err
		}
		return h.RemoveItem(r.Context(), m, id, transaction.RemoveItem{LineID: line})
	}, nil)
}

func (s *Server) applyDiscount(w http.ResponseWriter, r *http.Request) {
	var req discountRequest
	s.transactionCommand(w, r, http.StatusCreated, &req, func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		cmd := transaction.ApplyDiscount{Kind: transaction.DiscountKind(req.Kind), Reason: req.Reason}
		switch cmd.Kind {
		case transaction.DiscountPercent:
			if req.Bps == nil || req.Amount != nil {
				return nil, commands.Result{}, invalid("a percent discount takes bps, not amount", FieldError{Field: "bps", Code: "required"})
			}
			cmd.Bps = *req.Bps
		case transaction.DiscountAmount:
			if req.Amount == nil || req.Bps != nil {
				return nil, commands.Result{}, invalid("an amount discount takes amount, not bps", FieldError{Field: "amount", Code: "required"})
			}
			cmd.Amount = money.Amount(*req.Amount)
		default:
			return nil, commands.Result{}, invalid(`kind must be "percent" or "amount"`, FieldError{Field: "kind", Code: "invalid"})
		}
		return h.ApplyDiscount(r.Context(), m, id, cmd)
	}, nil)
}

func (s *Server) checkout(w http.ResponseWriter, r *http.Request) {
	var req emptyRequest
	s.transactionCommand(w, r, http.StatusOK, &req, func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		return h.Checkout(r.Context(), m, id)
	}, nil)
}

func (s *Server) addPayment(w http.ResponseWriter, r *http.Request) {
	var req paymentRequest
	var paymentID uuid.UUID
	s.transactionCommand(w, r, http.StatusCreated, &req, func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		var err error
		if paymentID, err = parseID("payment_id", req.PaymentID); err != nil {
			return nil, commands.Result{}, err
		}
		cur, err := optionalCurrency(req.Currency)
		if err != nil {
			return nil, commands.Result{}, err
		}
		return h.AddPayment(r.Context(), m, id, transaction.AddPayment{PaymentID: paymentID,
			Method: transaction.Method(req.Method), Amount: money.Amount(req.Amount), Currency: cur})
	}, func(t *transaction.Transaction, a *transactionAnswer) {
		payments := t.Payments() // the command's payment is the newest
		p := payments[len(payments)-1]
		applied, change := int64(p.Applied), int64(p.Change)
		a.PaymentID, a.PaymentStatus, a.Applied, a.Change = p.PaymentID.String(), string(p.Status), &applied, &change
	})
}

func (s *Server) paymentCommand(w http.ResponseWriter, r *http.Request, dst any, run func(h *commands.Handlers, m commands.Meta, id, payment uuid.UUID) (*transaction.Transaction, commands.Result, error)) {
	var paymentID uuid.UUID
	s.transactionCommand(w, r, http.StatusOK, dst, func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		var err error
		if paymentID, err = pathUUID(r, "payment_id"); err != nil {
			return nil, commands.Result{}, err
		}
		return run(h, m, id, paymentID)
	}, func(t *transaction.Transaction, a *transactionAnswer) {
		for _, p := range t.Payments() {
			if p.PaymentID == paymentID {
				a.PaymentID, a.PaymentStatus = p.PaymentID.String(), string(p.Status)
			}
		}
	})
}

func (s *Server) confirmPayment(w http.ResponseWriter, r *http.Request) {
	var req confirmRequest
	s.paymentCommand(w, r, &req, func(h *commands.Handlers, m commands.Meta, id, payment uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		return h.ConfirmPayment(r.Context(), m, id, transaction.ConfirmPayment{PaymentID: payment, GatewayRef: req.GatewayRef})
	})
}

func (s *Server) declinePayment(w http.ResponseWriter, r *http.Request) {
	var req reasonRequest
	s.paymentCommand(w, r, &req, func(h *commands.Handlers, m commands.Meta, id, payment uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		return h.DeclinePayment(r.Context(), m, id, transaction.DeclinePayment{PaymentID: payment, Reason: req.Reason})
	})
}

func (s *Server) complete(w http.ResponseWriter, r *http.Request) {
	var req emptyRequest
	s.transactionCommand(w, r, http.StatusOK, &req, func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		return h.CompleteTransaction(r.Context(), m, id)
	}, nil)
}

func (s *Server) void(w http.ResponseWriter, r *http.Request) {
	var req reasonRequest
	s.transactionCommand(w, r, http.StatusOK, &req, func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		return h.VoidTransaction(r.Context(), m, id, transaction.Void{Reason: req.Reason})
	}, nil)
}

func (s *Server) refund(w http.ResponseWriter, r *http.Request) {
	var req refundRequest
	var refundID uuid.UUID
	s.transactionCommand(w, r, http.StatusCreated, &req, func(h *commands.Handlers, m commands.Meta, id uuid.UUID) (*transaction.Transaction, commands.Result, error) {
		var err error
		if refundID, err = parseID("refund_id", req.RefundID); err != nil {
			return nil, commands.Result{}, err
		}
		cmd := transaction.Refund{RefundID: refundID, Reason: req.Reason}
		if req.Amount != nil {
			cmd.Amount = money.Amount(*req.Amount)
		}
		for i, l := range req.Lines {
			line, err := requiredID(fmt.Sprintf("lines[%d].line_id", i), l.LineID)
			if err != nil {
				return nil, commands.Result{}, err
			}
			cmd.Lines = append(cmd.Lines, transaction.RefundLine{LineID: line, Qty: l.Qty})
		}
		return h.IssueRefund(r.Context(), m, id, cmd)
	}, func(t *transaction.Transaction, a *transactionAnswer) {
		refunds := t.Refunds() // the command's refund is the newest
		rf := refunds[len(refunds)-1]
		v := int64(rf.Amount)
		a.RefundID, a.Amount = rf.RefundID.String(), &v
	})
}

// zoneName reports whether name is a time zone of the IANA database (an
// Area/Location, or UTC and its aliases), and not one of the database's
// files that names none: the host's own time ("localtime", "Local"), whose
// days would move with the host, "posixrules", "Factory", and the "posix/"
// and "right/" copies of the zones.
func zoneName(name string) bool {
	switch {
	case !zoneForm.MatchString(name), strings.EqualFold(name, "local"), name == "localtime", name == "posixrules", name == "Factory",
		strings.HasPrefix(name, "posix/"), strings.HasPrefix(name, "right/"):
		return false
	}
	_, err := time.LoadLocation(name)
	return err == nil
}

// zoneForm is the shape of a zone database name: segments of letters,
// digits, '_', '+' and '-' (so no "./localtime" or "Asia//Jakarta", which
// the host's files would also resolve).
var zoneForm = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$`)

func (s *Server) changeSettings(w http.ResponseWriter, r *http.Request) {
	var req settingsRequest
	if err := decode(w, r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.PricesIncludeTax == nil || req.AllowNegativeStock == nil {
		s.fail(w, r, invalid("every setting is required", FieldError{Field: "prices_include_tax", Code: "required"},
			FieldError{Field: "allow_negative_stock", Code: "required"}))
		return
	}
	currency, err := parseCurrency(req.Currency)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !zoneName(req.Timezone) {
		s.fail(w, r, invalid("timezone must be an IANA time zone name", FieldError{Field: "timezone", Code: "invalid"}))
		return
	}
	m, err := s.meta(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, res, err := s.handlers(r).ChangeSettings(r.Context(), m, settings.Change{Currency: currency,
		PricesIncludeTax: *req.PricesIncludeTax, AllowNegativeStock: *req.AllowNegativeStock, Timezone: req.Timezone})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeCommand(w, http.StatusOK, res.Version, res.Position, settingsAnswer{
		commandResult: commandResult{ID: m.MerchantID.String(), Version: res.Version, Position: res.Position.String()},
		settingsView:  viewSettings(st),
	})
}

func (s *Server) getSettings(w http.ResponseWriter, r *http.Request) {
	m, err := s.meta(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, res, err := s.handlers(r).Settings(r.Context(), m)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatUint(res.Version, 10)))
	w.Header().Set("X-Position", res.Position.String())
	writeJSON(w, http.StatusOK, struct {
		settingsView
		Version uint64 `json:"version"`
	}{viewSettings(st), st.Version()})
}

func viewSettings(st *settings.Settings) settingsView {
	v := st.Values()
	return settingsView{Currency: string(v.Currency), PricesIncludeTax: v.PricesIncludeTax,
		AllowNegativeStock: v.AllowNegativeStock, Timezone: v.Timezone}
}
