package api

import (
	"net/http"

	"pos/commands"
	"pos/domain/money"
	"pos/domain/stock"
)

// Stock commands (API.md "Stock"). Receipts may be recorded by any role that
// issues commands (a cashier takes in a delivery at their branch);
// adjustments and transfers need MANAGER or ADMIN until approval policies
// exist. A branch-limited token must name every branch the command touches.

type receiptRequest struct {
	BranchID  string  `json:"branch_id"`
	SKU       string  `json:"sku"`
	Qty       int64   `json:"qty"`
	UnitCost  *int64  `json:"unit_cost"` // required: a missing cost would pull the average down
	ReceiptID *string `json:"receipt_id"`
}

type adjustmentRequest struct {
	BranchID     string  `json:"branch_id"`
	SKU          string  `json:"sku"`
	Delta        int64   `json:"delta"`
	Reason       string  `json:"reason"`
	AdjustmentID *string `json:"adjustment_id"`
}

type transferRequest struct {
	FromBranchID string  `json:"from_branch_id"`
	ToBranchID   string  `json:"to_branch_id"`
	SKU          string  `json:"sku"`
	Qty          int64   `json:"qty"`
	TransferID   *string `json:"transfer_id"`
}

// levelView is a ledger's state as the stock answers show it.
type levelView struct {
	BranchID  string `json:"branch_id"`
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
	AvgCost   int64  `json:"avg_cost"`
}

type ledgerAnswer struct {
	commandResult
	levelView
}

type transferAnswer struct {
	commandResult
	TransferID string    `json:"transfer_id"`
	From       levelView `json:"from"`
	To         levelView `json:"to"`
}

func viewLevel(l *stock.Ledger) levelView {
	k := l.Key()
	return levelView{BranchID: k.BranchID.String(), SKU: k.SKU, OnHand: l.OnHand(), Reserved: l.Reserved(),
		Available: l.Available(), AvgCost: int64(l.AvgCost())}
}

func (s *Server) answerLedger(w http.ResponseWriter, l *stock.Ledger, res commands.Result) {
	writeCommand(w, http.StatusCreated, res.Version, res.Position, ledgerAnswer{
		commandResult: commandResult{ID: l.Key().LedgerID.String(), Version: res.Version, Position: res.Position.String()},
		levelView:     viewLevel(l),
	})
}

func (s *Server) receiveStock(w http.ResponseWriter, r *http.Request) {
	var req receiptRequest
	var cmd commands.ReceiveStock
	m, err := s.stockRequest(w, r, &req, func() (err error) {
		if cmd.BranchID, err = requiredID("branch_id", req.BranchID); err != nil {
			return err
		}
		if req.UnitCost == nil {
			return invalid("unit_cost is required", FieldError{Field: "unit_cost", Code: "required"})
		}
		cmd.ReceiptID, err = parseID("receipt_id", req.ReceiptID)
		cmd.SKU, cmd.Qty, cmd.UnitCost = req.SKU, req.Qty, money.Amount(*req.UnitCost)
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l, res, err := s.handlers(r).ReceiveStock(r.Context(), m, cmd)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.answerLedger(w, l, res)
}

func (s *Server) adjustStock(w http.ResponseWriter, r *http.Request) {
	var req adjustmentRequest
	var cmd commands.AdjustStock
	m, err := s.stockRequest(w, r, &req, func() (err error) {
		if cmd.BranchID, err = requiredID("branch_id", req.BranchID); err != nil {
			return err
		}
		cmd.AdjustmentID, err = parseID("adjustment_id", req.AdjustmentID)
		cmd.SKU, cmd.Delta, cmd.Reason = req.SKU, req.Delta, req.Reason
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l, res, err := s.handlers(r).AdjustStock(r.Context(), m, cmd)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.answerLedger(w, l, res)
}

func (s *Server) transferStock(w http.ResponseWriter, r *http.Request) {
	var req transferRequest
	var cmd commands.TransferStock
	m, err := s.stockRequest(w, r, &req, func() (err error) {
		if cmd.FromBranchID, err = requiredID("from_branch_id", req.FromBranchID); err != nil {
			return err
		}
		if cmd.ToBranchID, err = requiredID("to_branch_id", req.ToBranchID); err != nil {
			return err
		}
		cmd.TransferID, err = parseID("transfer_id", req.TransferID)
		cmd.SKU, cmd.Qty = req.SKU, req.Qty
		return err
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	t, err := s.handlers(r).TransferStock(r.Context(), m, cmd)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The answer's position is the later half's, so that X-Min-Position
	// with it waits for both ledgers.
	pos := t.Result.Position
	if pos.Less(t.ToResult.Position) {
		pos = t.ToResult.Position
	}
	writeCommand(w, http.StatusCreated, t.Result.Version, pos, transferAnswer{
		commandResult: commandResult{ID: t.From.Key().LedgerID.String(), Version: t.Result.Version, Position: pos.String()},
		TransferID:    t.ID.String(),
		From:          viewLevel(t.From),
		To:            viewLevel(t.To),
	})
}

// stockRequest decodes a stock command's body into dst, lets parse read it,
// and returns the command's metadata.
func (s *Server) stockRequest(w http.ResponseWriter, r *http.Request, dst any, parse func() error) (commands.Meta, error) {
	if err := decode(w, r, dst); err != nil {
		return commands.Meta{}, err
	}
	if err := parse(); err != nil {
		return commands.Meta{}, err
	}
	return s.meta(r)
}
