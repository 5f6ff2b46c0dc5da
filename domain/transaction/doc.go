// Package transaction is the sale aggregate of SPEC §4.1: a pure decision
// model with no infrastructure, no clock and no random source. Ids and the
// time of each command come in with the command.
//
// # Shape
//
// Transaction is a plain struct with unexported fields. A command method
// (Open, AddItem, RemoveItem, ApplyDiscount, Checkout, AddPayment,
// ConfirmPayment, DeclinePayment, Complete, Void, Refund) checks the command
// against the current state and returns the events it decides, without
// changing anything; the state changes only in Apply, one event at a time,
// and Load rebuilds a transaction from its history the same way. A command
// handler loads, decides, appends the events at the loaded Version, and may
// Apply them to build its response.
//
// Checks run in a fixed order, so each refusal has one answer: a transaction
// with no history (ErrNotFound; ErrAlreadyExists for Open on one that
// exists), then malformed input (*ValidationError, ErrInvalid), then the
// currency (ErrCurrencyMismatch), then the status (ErrInvalidState), then
// ids and business rules.
//
// # State machine
//
//	draft ──Checkout──▶ pending_payment ──payments cover the total──▶ paid ──Complete──▶ completed
//	draft, pending_payment, paid ──Void──▶ voided
//	paid, completed, partially_refunded ──Refund──▶ partially_refunded or refunded
//
// Items and discounts change only in draft; payments only in
// pending_payment; Complete only from paid; Void from draft,
// pending_payment or paid; Refund from paid, completed or
// partially_refunded. Any other command in a status is ErrInvalidState.
//
// # Money and rounding rules
//
// Every amount is an integer number of minor units of the transaction's
// currency (money.Amount, within 0..2^53−1); every operation is checked and
// an overflow is an error, never a wrap. Rates are basis points (1100 =
// 11 %). round_half_even is money.HalfEven: to the nearest unit, exact ties
// to the even unit.
//
//   - R1 Line gross: gross = qty × unit_price, exact. A line whose gross, or
//     a draft whose totals, would exceed 2^53−1 is refused at AddItem.
//   - R2 Discount: percent discounts add up (10 % and 5 % make 15 %, not
//     compounded) and are taken on the subtotal = Σ gross:
//     D = round_half_even(subtotal × Σbps / 10000) + Σ amount discounts.
//     ApplyDiscount refuses (ErrDiscountExceedsTotal) a discount that would
//     make Σbps exceed 10000 or D exceed the subtotal. Percent discounts
//     follow the subtotal while the sale is a draft; if RemoveItem lowers
//     the subtotal below D, D is capped at the subtotal (total 0, never
//     below).
//   - R3 Allocation: D is split across lines pro rata by gross with the
//     largest-remainder method (money.Allocate): each line gets
//     floor(D × gross / subtotal), and the units left over go one each to
//     the lines with the largest remainders, ties to the earlier line. The
//     shares sum to D exactly. net = gross − share.
//   - R4 Tax, exclusive prices: tax = round_half_even(net × rate / 10000)
//     per line; line total = net + tax.
//   - R5 Tax, inclusive prices (net already includes tax):
//     tax = net − round_half_even(net × 10000 / (10000 + rate)) per line;
//     line total = net.
//   - R6 Totals: subtotal = Σ gross, discount = D, tax = Σ line tax,
//     grand_total = Σ line total. So grand_total − tax is the pre-tax net in
//     both modes (exclusive: grand_total = Σ net + Σ tax; inclusive:
//     grand_total = Σ net). Checkout freezes these figures, per line too,
//     in CheckedOut; nothing is recomputed after.
//   - R7 Refund by line: refunding k units of a line of q units whose frozen
//     total is T, r units of which were refunded earlier for R in all, gives
//     round_half_even(T × (r+k) / q) − R. The first refund of a line is thus
//     round_half_even(T × k / q); the refund of its last units is exactly
//     the remainder; a line's refunds sum to T. (Rounding each refund on its
//     own could sum to more than T: 8 units for 5 round to 1 each.)
//
// # Payments
//
// due = grand_total − settled − pending, where a pending non-cash payment
// reserves its amount until the gateway confirms or declines it. A payment
// amount must be greater than zero. CASH settles at once with applied =
// min(amount, due) and change = amount − applied; cash when nothing is due
// (pending payments reserve it all) is ErrInvalidState. CARD, QRIS and
// EWALLET start pending with applied = amount and are refused with
// ErrOverpayment above due. When settled payments reach the grand total the
// deciding command also emits TransactionPaid (paid_total = grand total), in
// the same append, and the status is paid. A sale whose grand total is 0
// becomes paid at Checkout (CheckedOut then TransactionPaid{0}).
//
// # Refunds
//
// A refund is a bare amount (> 0) or lines; never both. Refunds together
// never exceed paid minus refunded (ErrRefundExceedsPaid); a line's refunded
// units never exceed its sold units. Refunds by amount are not attributed to
// lines, so a later refund by lines is still priced by R7 and must fit in
// what is left. The status after a refund is refunded when nothing
// refundable is left (the refunds reach the paid total, or, for a sale that
// took no money, every unit is returned), partially_refunded otherwise; no
// refund follows refunded.
//
// # Events
//
// Events are values with snake_case JSON tags at SchemaVersion 1; EventTypes
// lists their stored names, Event.EventType (or TypeName) gives one, and
// Decode reads one back. Every event after TransactionOpened carries the
// command's time as "at" (in UTC), so an offline sale synced later still
// falls on the business day it happened.
package transaction
