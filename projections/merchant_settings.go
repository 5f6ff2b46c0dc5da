package projections

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"pos/domain/settings"
	"pos/eventstore"
)

// SettingsCategory is the stream category of merchant settings
// (commands.ChangeSettings: one stream per merchant).
const SettingsCategory = "settings"

// MerchantSettings projects SettingsChanged into rm_merchant_settings, one
// row per merchant that ever changed its settings (a merchant without a row
// has settings.Defaults). DailySales reads the time zone from it.
//
// Delivery is at least once; the Runner applies each event exactly once, in
// stream order. SettingsChanged carries every setting, so the row is simply
// replaced.
type MerchantSettings struct{}

// Name returns "merchant_settings".
func (MerchantSettings) Name() string { return "merchant_settings" }

// Tables returns the read-model tables it writes (Tabled).
func (MerchantSettings) Tables() []string { return []string{"rm_merchant_settings"} }

// Reads returns nothing: it reads only its own tables (Tabled).
func (MerchantSettings) Reads() []string { return nil }

// Categories returns the settings category.
func (MerchantSettings) Categories() []string { return []string{SettingsCategory} }

// Handles reports true for SettingsChanged.
func (MerchantSettings) Handles(eventType string) bool { return eventType == "SettingsChanged" }

// Apply implements Projector.
func (MerchantSettings) Apply(ctx context.Context, tx pgx.Tx, e eventstore.RecordedEvent) error {
	ev, err := settings.Decode(e.Type, e.Data)
	if err != nil {
		return err
	}
	c, ok := ev.(settings.SettingsChanged)
	if !ok {
		return fmt.Errorf("unexpected event %T", ev)
	}
	merchant, _, err := aggregateOf(e)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `
        INSERT INTO rm_merchant_settings (merchant_id, timezone, currency, prices_include_tax, allow_negative_stock, version, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (merchant_id) DO UPDATE SET timezone = excluded.timezone, currency = excluded.currency,
            prices_include_tax = excluded.prices_include_tax, allow_negative_stock = excluded.allow_negative_stock,
            version = excluded.version, updated_at = excluded.updated_at`,
		merchant, c.Timezone, string(c.Currency), c.PricesIncludeTax, c.AllowNegativeStock, int64(e.Version), e.RecordedAt)
	return wrap("upsert rm_merchant_settings", err)
}

// All returns the read-model projectors in the order a Runner must apply
// them: MerchantSettings before DailySales, which reads its table. Stock
// reads only its own tables.
func All() []Projector {
	return []Projector{MerchantSettings{}, Transactions{}, NewDailySales(), Stock{}}
}
