package transaction

import "time"

// Complete is the command that closes a paid sale (synced, receipt given).
type Complete struct {
	At time.Time
}

// Complete decides closing a paid sale; only paid transactions complete.
func (t *Transaction) Complete(cmd Complete) ([]Event, error) {
	if err := t.mustExist(); err != nil {
		return nil, err
	}
	if err := checkAt(cmd.At); err != nil {
		return nil, err
	}
	if err := t.mustBe("complete", StatusPaid); err != nil {
		return nil, err
	}
	return []Event{TransactionCompleted{At: utc(cmd.At)}}, nil
}
