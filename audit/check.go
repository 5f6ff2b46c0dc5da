package audit

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"pos/eventstore"
)

// Finding is one thing verification found wrong: a hash-chain break (with
// eventstore's reasons: hash_mismatch, prev_hash_mismatch, version_gap) or a
// difference from a signed anchor (the Reason constants below). Stream is
// empty for findings about an anchor itself.
type Finding struct {
	Stream  string `json:"stream"`
	Version uint64 `json:"version"`
	Reason  string `json:"reason"`
	// MerchantID is the merchant the finding concerns.
	MerchantID string `json:"merchant_id,omitempty"`
	// AnchoredVersion is the stream's version in the anchor, for findings
	// against one.
	AnchoredVersion uint64 `json:"anchored_version,omitempty"`
	// AnchorSeq is the anchor the finding is against.
	AnchorSeq int64 `json:"anchor_seq,omitempty"`
}

// Reasons of findings against anchors.
const (
	// ReasonStreamMissing: an anchored stream has no event left. Version is
	// 1, the first missing one.
	ReasonStreamMissing = "stream_missing"
	// ReasonMissingEvents: the stream ends before its anchored version.
	// Version is the first missing version.
	ReasonMissingEvents = "missing_events"
	// ReasonAnchoredEventChanged: the event at the anchored version no longer
	// has the anchored hash: the history up to it was rewritten (its chain
	// may verify on its own).
	ReasonAnchoredEventChanged = "anchored_event_changed"
	// ReasonSignatureInvalid: the anchor is not signed by the configured key
	// (forged or altered). Its heads are not compared.
	ReasonSignatureInvalid = "anchor_signature_invalid"
	// ReasonRootMismatch: the stored heads do not hash to the signed root
	// (rows altered). Its heads are not compared.
	ReasonRootMismatch = "anchor_root_mismatch"
	// ReasonChainBroken: the anchor row AnchorSeq does not chain to the
	// row before it (a row removed, or an old anchor copied in again), or
	// a row the latest anchor's heads are rebuilt from is missing.
	ReasonChainBroken = "anchor_chain_broken"
	// ReasonAnchorMalformed: the anchor row AnchorSeq cannot be read (its
	// stored heads or position do not decode); verification compares with
	// the latest anchor before it that verifies.
	ReasonAnchorMalformed = "anchor_malformed"
	// ReasonAnchorMissing: a logged anchor is not in the ledger (deleted).
	ReasonAnchorMissing = "anchor_missing"
	// ReasonAnchorMismatch: a logged anchor differs from the ledger's row of
	// the same sequence number.
	ReasonAnchorMismatch = "anchor_mismatch"
)

// HashAt returns the stored hash of stream's event at version, and false when
// there is no such event.
type HashAt func(ctx context.Context, stream string, version uint64) ([]byte, bool, error)

// StoreHashAt looks hashes up in store.
func StoreHashAt(store eventstore.Store) HashAt {
	return func(ctx context.Context, stream string, version uint64) ([]byte, bool, error) {
		events, err := store.ReadStream(ctx, stream, version, 1)
		if err != nil {
			return nil, false, err
		}
		if len(events) == 0 || events[0].Version != version {
			return nil, false, nil
		}
		return events[0].Hash, true, nil
	}
}

// Check compares the current stream heads (eventstore.VerifyReport.Heads,
// read after the anchor was) with anchor a, verified with key. For each
// anchored stream it reports a stream gone, a stream shorter than anchored,
// or an anchored event whose hash changed; hashAt reads the hash at the
// anchored version of streams that grew since (nil skips that check). An
// anchor whose signature or root does not verify is reported as such and
// its heads are not trusted for comparison.
func Check(ctx context.Context, a *Anchor, key PublicKey, heads map[string]eventstore.Head, hashAt HashAt) ([]Finding, error) {
	finding := func(stream string, version uint64, reason string, anchored uint64) Finding {
		return Finding{Stream: stream, Version: version, Reason: reason, MerchantID: a.MerchantID, AnchoredVersion: anchored, AnchorSeq: a.Seq}
	}
	if !a.SignatureValid(key) {
		return []Finding{finding("", 0, ReasonSignatureInvalid, 0)}, nil
	}
	var out []Finding
	if a.LinkBroken {
		out = append(out, finding("", 0, ReasonChainBroken, 0))
	}
	if !a.RootValid() {
		return append(out, finding("", 0, ReasonRootMismatch, 0)), nil
	}
	for _, l := range SortedLeaves(a.Heads) {
		cur, ok := heads[l.Stream]
		switch {
		case !ok:
			out = append(out, finding(l.Stream, 1, ReasonStreamMissing, l.Version))
		case cur.Version < l.Version:
			out = append(out, finding(l.Stream, cur.Version+1, ReasonMissingEvents, l.Version))
		case cur.Version == l.Version:
			if !bytes.Equal(cur.Hash, l.Hash) {
				out = append(out, finding(l.Stream, l.Version, ReasonAnchoredEventChanged, l.Version))
			}
		case hashAt != nil:
			h, found, err := hashAt(ctx, l.Stream, l.Version)
			if err != nil {
				return nil, fmt.Errorf("audit: check %s at %d: %w", l.Stream, l.Version, err)
			}
			switch {
			case !found:
				out = append(out, finding(l.Stream, l.Version, ReasonMissingEvents, l.Version))
			case !bytes.Equal(h, l.Hash):
				out = append(out, finding(l.Stream, l.Version, ReasonAnchoredEventChanged, l.Version))
			}
		}
	}
	return out, nil
}

// CheckLog compares anchors kept outside the database (the "audit anchor"
// log lines, one JSON object per line; other lines are skipped) with the
// ledger: each must be signed by key and present in the ledger unchanged
// and readable. With merchant set, only that merchant's anchors are
// checked. It returns the findings and how many anchors it checked.
func CheckLog(ctx context.Context, ledger *Ledger, key PublicKey, log io.Reader, merchant string) ([]Finding, int, error) {
	sc := bufio.NewScanner(log)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var out []Finding
	n := 0
	for sc.Scan() {
		logged, ok, err := ParseLogLine(sc.Bytes())
		if !ok {
			continue
		}
		if err != nil {
			return nil, n, err
		}
		if merchant != "" && logged.MerchantID != merchant {
			continue
		}
		n++
		f := Finding{MerchantID: logged.MerchantID, AnchorSeq: logged.Seq}
		if !logged.SignatureValid(key) {
			f.Reason = ReasonSignatureInvalid
			out = append(out, f)
			continue
		}
		stored, found, err := ledger.Get(ctx, logged.Seq)
		if _, ok := errors.AsType[*MalformedAnchorError](err); ok {
			// Reported with every other finding, never in their place.
			f.Reason = ReasonAnchorMalformed
			out = append(out, f)
			continue
		}
		if err != nil {
			return nil, n, err
		}
		switch {
		case !found:
			f.Reason = ReasonAnchorMissing
			out = append(out, f)
		case stored.MerchantID != logged.MerchantID || stored.Position != logged.Position ||
			!stored.CreatedAt.Equal(logged.CreatedAt) || !bytes.Equal(stored.Root, logged.Root) ||
			!bytes.Equal(stored.Signature, logged.Signature):
			f.Reason = ReasonAnchorMismatch
			out = append(out, f)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, n, fmt.Errorf("audit: read anchor log: %w", err)
	}
	return out, n, nil
}

// SortFindings orders findings by merchant, then anchor-level findings
// before stream ones, then stream and version, then anchor and reason (so
// that equal findings are next to each other).
func SortFindings(fs []Finding) {
	slices.SortStableFunc(fs, func(a, b Finding) int {
		if c := strings.Compare(a.MerchantID, b.MerchantID); c != 0 {
			return c
		}
		if c := strings.Compare(a.Stream, b.Stream); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Version, b.Version); c != 0 {
			return c
		}
		if c := cmp.Compare(a.AnchorSeq, b.AnchorSeq); c != 0 {
			return c
		}
		return strings.Compare(a.Reason, b.Reason)
	})
}
