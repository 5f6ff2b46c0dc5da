package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"pos/eventstore"
)

// Auditor verifies history: every hash chain (eventstore.Verify) and, with a
// Ledger, each merchant's current stream heads against its latest signed
// anchor.
type Auditor struct {
	Store eventstore.Store
	// Ledger, when set, holds the anchors to check against; nil checks the
	// hash chains only.
	Ledger *Ledger
	// Key verifies anchor signatures.
	Key PublicKey
}

// Report is the outcome of Auditor.Verify, in the shape of GET
// /v1/audit/verify.
type Report struct {
	StreamsChecked int   `json:"streams_checked"`
	EventsChecked  int64 `json:"events_checked"`
	// Breaks holds every finding: chain breaks and anchor findings, by
	// merchant, then stream and version (anchor-level findings, whose
	// stream is empty, first).
	Breaks []Finding `json:"breaks"`
	// Anchors are the anchors checked, one per anchored merchant.
	Anchors []AnchorSummary `json:"anchors"`
}

// AnchorSummary describes an anchor checked.
type AnchorSummary struct {
	MerchantID string    `json:"merchant_id"`
	Seq        int64     `json:"seq"`
	Position   string    `json:"position"`
	CreatedAt  time.Time `json:"created_at"`
	Streams    uint64    `json:"streams"`
	Events     uint64    `json:"events"`
	KeyID      string    `json:"key_id"`
}

// Verify recomputes the hash chains of opts.Filter's merchant (every merchant
// when zero) and checks the heads against each merchant's latest anchor
// (and, when that one does not verify or cannot be read, also against the
// latest that does), and that each merchant's anchors chain from the first
// (Ledger.ChainBreaks). The anchors are read first, so the events read
// after cover at least what they anchor. It returns an error only when it
// could not finish; what it found is in the report.
func (a *Auditor) Verify(ctx context.Context, opts eventstore.VerifyOptions) (Report, error) {
	var anchors []*Anchor
	found := []Finding{}
	if a.Ledger != nil {
		merchants := []string{opts.Filter.MerchantID}
		if opts.Filter.MerchantID == "" {
			var err error
			if merchants, err = a.Ledger.Merchants(ctx); err != nil {
				return Report{}, err
			}
		}
		for _, m := range merchants {
			an, err := a.Ledger.Latest(ctx, m)
			if malformed, ok := errors.AsType[*MalformedAnchorError](err); ok {
				found = append(found, Finding{MerchantID: m, AnchorSeq: malformed.Seq, Reason: ReasonAnchorMalformed})
				an, err = a.Ledger.LatestValid(ctx, m, a.Key, malformed.Seq)
			}
			if err != nil {
				return Report{}, err
			}
			if an != nil {
				anchors = append(anchors, an)
			}
			breaks, err := a.Ledger.ChainBreaks(ctx, m)
			if err != nil {
				return Report{}, err
			}
			for _, seq := range breaks {
				found = append(found, Finding{MerchantID: m, AnchorSeq: seq, Reason: ReasonChainBroken})
			}
		}
	}
	vr, err := eventstore.Verify(ctx, a.Store, opts)
	if err != nil {
		return Report{}, err
	}
	rep := Report{StreamsChecked: vr.StreamsChecked, EventsChecked: vr.EventsChecked, Breaks: found, Anchors: []AnchorSummary{}}
	for _, b := range vr.Breaks {
		_, merchant, _, _ := eventstore.ParseStreamName(b.Stream)
		rep.Breaks = append(rep.Breaks, Finding{Stream: b.Stream, Version: b.Version, Reason: b.Reason, MerchantID: merchant})
	}
	hashAt := StoreHashAt(a.Store)
	// The chain's walk (above) names the rows that do not chain; Check
	// would name the latest anchor for the same break.
	unchained := func(f Finding) bool { return f.Reason == ReasonChainBroken }
	for _, an := range anchors {
		fs, err := Check(ctx, an, a.Key, vr.Heads, hashAt)
		if err != nil {
			return Report{}, fmt.Errorf("audit: verify: %w", err)
		}
		rep.Breaks = append(rep.Breaks, slices.DeleteFunc(fs, unchained)...)
		if !an.verifies(a.Key) {
			// Compare with the latest anchor that is authentic, too: a
			// forged latest anchor must not hide what an earlier one saw.
			valid, err := a.Ledger.LatestValid(ctx, an.MerchantID, a.Key, an.Seq)
			if err != nil {
				return Report{}, err
			}
			if valid != nil {
				if fs, err = Check(ctx, valid, a.Key, vr.Heads, hashAt); err != nil {
					return Report{}, fmt.Errorf("audit: verify: %w", err)
				}
				rep.Breaks = append(rep.Breaks, slices.DeleteFunc(fs, unchained)...)
			}
		}
		rep.Anchors = append(rep.Anchors, AnchorSummary{MerchantID: an.MerchantID, Seq: an.Seq, Position: an.Position.String(),
			CreatedAt: an.CreatedAt, Streams: an.Streams, Events: an.Events, KeyID: an.KeyID})
	}
	SortFindings(rep.Breaks)
	// The latest anchor and the latest valid one may see the same break.
	rep.Breaks = slices.Compact(rep.Breaks)
	return rep, nil
}
