package commands

import (
	"context"

	"github.com/google/uuid"

	"pos/domain/settings"
	"pos/eventstore"
)

// settingsCategory is the stream category of merchant settings; the stream
// id is the merchant id itself (one Settings per merchant).
const settingsCategory = "settings"

var settingsKind = kind[*settings.Settings, settings.Event]{
	category: settingsCategory,
	schema:   settings.SchemaVersion,
	blank:    func() *settings.Settings { return &settings.Settings{} },
	apply:    (*settings.Settings).Apply,
	version:  (*settings.Settings).Version,
	decode:   settings.Decode,
	typeOf:   settings.TypeName,
}

// ChangeSettings replaces the merchant's settings (ADMIN; the caller checks
// the role and that the time zone exists). An identical change writes
// nothing and answers the current version.
func (h *Handlers) ChangeSettings(ctx context.Context, meta Meta, cmd settings.Change) (*settings.Settings, Result, error) {
	cmd.At = h.now(meta)
	cmd.By = meta.Actor
	return execute(ctx, h, settingsKind, meta, meta.MerchantID.String(), func(s *settings.Settings) ([]settings.Event, error) {
		return s.Change(cmd)
	})
}

// Settings loads the merchant's settings (the defaults when never changed)
// and the position of their last change.
func (h *Handlers) Settings(ctx context.Context, meta Meta) (*settings.Settings, Result, error) {
	s, pos, _, err := load(ctx, h.store, nil, settingsKind, SettingsStream(meta.MerchantID), false, false)
	if err != nil {
		return nil, Result{}, err
	}
	return s, Result{Version: s.Version(), Position: pos}, nil
}

// settingsFor returns the settings a sale is opened with: the current
// ones, or, for a sale a till opened offline (meta.At, its occurred_at),
// those in force then, so that a change made while the till was offline
// does not reprice what it rang up (negative stock: see
// allowNegativeStock).
func (h *Handlers) settingsFor(ctx context.Context, meta Meta) (settings.Values, error) {
	s, _, err := h.Settings(ctx, meta)
	if err != nil {
		return settings.Values{}, err
	}
	if meta.At.IsZero() {
		return s.Values(), nil
	}
	return s.ValuesAt(meta.At), nil
}

// SettingsStream is the stream of merchant's settings.
func SettingsStream(merchant uuid.UUID) string {
	return streamName(settingsCategory, merchant, merchant)
}

func streamName(category string, merchant, id uuid.UUID) string {
	return eventstore.StreamName(category, merchant.String(), id.String())
}
