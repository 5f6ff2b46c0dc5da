package transaction

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// RemoveItem is the command that removes a line from a draft.
type RemoveItem struct {
	LineID uuid.UUID
	At     time.Time
}

// RemoveItem decides removing a line; an unknown line is ErrNotFound. The
// discounts stay: percent ones follow the new subtotal, and the total
// discount is capped at the subtotal (R2), so removing a line never takes
// the total below zero.
func (t *Transaction) RemoveItem(cmd RemoveItem) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := firstError(checkID("line_id", cmd.LineID), checkAt(cmd.At)); err != nil {
		return nil, err
	}
	if err := t.mustBe("remove an item from", StatusDraft); err != nil {
		return nil, err
	}
	if t.lineIndex(cmd.LineID) < 0 {
		return nil, fmt.Errorf("line %s: %w", cmd.LineID, ErrNotFound)
	}
	return []Event{ItemRemoved{LineID: cmd.LineID, At: utc(cmd.At)}}, nil
}
