package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/bits"
	"reflect"
	"slices"
	"testing"
	"time"

	"pos/eventstore"
)

// refRoot is RFC 6962 §2.1's recursive definition, to check MerkleRoot's
// iterative one against.
func refRoot(leaves []Leaf) []byte {
	switch len(leaves) {
	case 0:
		s := sha256.Sum256(nil)
		return s[:]
	case 1:
		h := leafHash(leaves[0])
		return h[:]
	}
	k := 1 << (bits.Len(uint(len(leaves)-1)) - 1) // largest power of two < n
	h := sha256.New()
	h.Write([]byte{1})
	h.Write(refRoot(leaves[:k]))
	h.Write(refRoot(leaves[k:]))
	return h.Sum(nil)
}

func leavesN(n int) []Leaf {
	out := make([]Leaf, n)
	for i := range out {
		h := sha256.Sum256([]byte{byte(i)})
		out[i] = Leaf{Stream: fmt.Sprintf("transaction-m.%04d", i), Version: uint64(i + 1), Hash: h[:]}
	}
	return out
}

func TestMerkleRootIsRFC6962(t *testing.T) {
	for n := 0; n <= 70; n++ {
		leaves := leavesN(n)
		got, err := MerkleRoot(leaves)
		if err != nil {
			t.Fatal(err)
		}
		if want := refRoot(leaves); !bytes.Equal(got, want) {
			t.Fatalf("%d leaves: root %x, RFC 6962 says %x", n, got, want)
		}
	}
}

func TestMerkleRootCommitsToEveryLeaf(t *testing.T) {
	leaves := leavesN(9)
	root, _ := MerkleRoot(leaves)
	seen := map[string]string{string(root): "original"}
	for i := range leaves {
		variants := map[string][]Leaf{
			"version": slices.Clone(leaves), "hash": slices.Clone(leaves), "stream": slices.Clone(leaves),
			"dropped": slices.Delete(slices.Clone(leaves), i, i+1),
		}
		variants["version"][i].Version++
		variants["hash"][i].Hash = bytes.Repeat([]byte{7}, 32)
		variants["stream"][i].Stream += "x"
		for name, v := range variants {
			if name == "stream" && i+1 < len(v) && v[i].Stream >= v[i+1].Stream {
				continue // no longer sorted: refused below
			}
			r, err := MerkleRoot(v)
			if err != nil {
				t.Fatalf("leaf %d %s: %v", i, name, err)
			}
			label := fmt.Sprintf("leaf %d %s", i, name)
			if prev, dup := seen[string(r)]; dup {
				t.Fatalf("%s has the same root as %s", label, prev)
			}
			seen[string(r)] = label
		}
	}
	if _, err := MerkleRoot([]Leaf{leaves[1], leaves[0]}); err == nil {
		t.Error("unsorted leaves accepted")
	}
	if _, err := MerkleRoot([]Leaf{leaves[0], leaves[0]}); err == nil {
		t.Error("a stream twice accepted")
	}
}

func TestLeavesRoundTrip(t *testing.T) {
	leaves := leavesN(5)
	leaves[2].Hash = nil
	got, err := decodeLeaves(encodeLeaves(leaves))
	if err != nil {
		t.Fatal(err)
	}
	leaves[2].Hash = []byte{}
	if !reflect.DeepEqual(got, leaves) {
		t.Fatalf("round trip: got %v, want %v", got, leaves)
	}
	if _, err := decodeLeaves(encodeLeaves(leaves)[:20]); err == nil {
		t.Error("truncated heads decoded")
	}
}

func testKey(t *testing.T, b byte) Key {
	t.Helper()
	k, err := NewKey(bytes.Repeat([]byte{b}, ed25519.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseKey(t *testing.T) {
	seed := bytes.Repeat([]byte{0xfb}, 32)
	want := testKey(t, 0xfb).Public()
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		k, err := ParseKey(" " + enc.EncodeToString(seed) + "\n")
		if err != nil || !k.Public().Equal(want) {
			t.Errorf("ParseKey(%s): %v", enc.EncodeToString(seed), err)
		}
	}
	if _, err := ParseKey(base64.StdEncoding.EncodeToString(seed[:31])); err == nil {
		t.Error("a 31-byte seed accepted")
	}
	if _, err := ParseKey("not base64!"); err == nil {
		t.Error("garbage accepted")
	}
	if p, err := ParsePublicKey(want.String()); err != nil || !p.Equal(want) {
		t.Errorf("public key round trip: %v", err)
	}
	if !DevKey().IsDev() || testKey(t, 1).IsDev() {
		t.Error("IsDev")
	}
	if len(want.ID()) != 16 || want.ID() == DevKey().Public().ID() {
		t.Errorf("key id %q", want.ID())
	}
}

func signedAnchor(t *testing.T, k Key, heads map[string]eventstore.Head) *Anchor {
	t.Helper()
	root, err := MerkleRoot(SortedLeaves(heads))
	if err != nil {
		t.Fatal(err)
	}
	a := &Anchor{Seq: 7, MerchantID: "0193a5c0-0000-7000-8000-000000000001", Position: eventstore.Position{Major: 900, Minor: 12},
		CreatedAt: truncateMicro(time.Now()), Streams: uint64(len(heads)), Root: root, Prev: chainHash([]byte("previous")), Heads: heads}
	for _, h := range heads {
		a.Events += h.Version
	}
	a.sign(k)
	return a
}

func TestAnchorSignatureCoversEveryField(t *testing.T) {
	k := testKey(t, 1)
	a := signedAnchor(t, k, map[string]eventstore.Head{"s": {Version: 3, Hash: []byte("h")}})
	if !a.SignatureValid(k.Public()) {
		t.Fatal("a fresh anchor does not verify")
	}
	if a.SignatureValid(testKey(t, 2).Public()) {
		t.Fatal("another key verifies it")
	}
	changes := map[string]func(*Anchor){
		"merchant":   func(a *Anchor) { a.MerchantID = "0193a5c0-0000-7000-8000-000000000002" },
		"position":   func(a *Anchor) { a.Position.Minor++ },
		"created_at": func(a *Anchor) { a.CreatedAt = a.CreatedAt.Add(time.Microsecond) },
		"streams":    func(a *Anchor) { a.Streams++ },
		"events":     func(a *Anchor) { a.Events-- },
		"root":       func(a *Anchor) { a.Root = bytes.Clone(a.Root); a.Root[0] ^= 1 },
		"prev":       func(a *Anchor) { a.Prev = nil },
		"key id":     func(a *Anchor) { a.KeyID = testKey(t, 2).Public().ID() },
		"signature":  func(a *Anchor) { a.Signature = bytes.Clone(a.Signature); a.Signature[5] ^= 1 },
	}
	for name, change := range changes {
		c := *a
		change(&c)
		if c.SignatureValid(k.Public()) {
			t.Errorf("changing %s keeps the signature valid", name)
		}
	}
}

func TestLogLineRoundTrip(t *testing.T) {
	k := testKey(t, 3)
	a := signedAnchor(t, k, map[string]eventstore.Head{"a": {Version: 1, Hash: []byte("x")}, "b": {Version: 4, Hash: []byte("y")}})
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info(LogMessage, a.LogAttrs()...)
	got, ok, err := ParseLogLine(bytes.TrimSpace(buf.Bytes()))
	if !ok || err != nil {
		t.Fatalf("ParseLogLine(%s): %v %v", buf.Bytes(), ok, err)
	}
	if !got.SignatureValid(k.Public()) || got.Seq != a.Seq || !got.CreatedAt.Equal(a.CreatedAt) || got.Position != a.Position {
		t.Fatalf("log line %s read back as %+v", buf.Bytes(), got)
	}
	if _, ok, _ := ParseLogLine([]byte(`{"msg":"serving"}`)); ok {
		t.Error("another log line read as an anchor")
	}
}

func TestCheck(t *testing.T) {
	k := testKey(t, 4)
	h := func(s string) []byte { x := sha256.Sum256([]byte(s)); return x[:] }
	anchored := map[string]eventstore.Head{
		"transaction-m.a": {Version: 3, Hash: h("a3")},
		"transaction-m.b": {Version: 2, Hash: h("b2")},
		"transaction-m.c": {Version: 5, Hash: h("c5")},
	}
	stored := map[string][]byte{"transaction-m.c@5": h("c5"), "transaction-m.b@2": h("rewritten")}
	hashAt := func(_ context.Context, stream string, v uint64) ([]byte, bool, error) {
		x, ok := stored[fmt.Sprintf("%s@%d", stream, v)]
		return x, ok, nil
	}
	with := func(change func(map[string]eventstore.Head)) map[string]eventstore.Head {
		m := cloneHeads(anchored)
		m["transaction-m.new"] = eventstore.Head{Version: 1, Hash: h("n1")} // not anchored: fine
		change(m)
		return m
	}
	cases := []struct {
		name  string
		heads map[string]eventstore.Head
		want  []string
	}{
		{"intact", with(func(map[string]eventstore.Head) {}), nil},
		{"grown since", with(func(m map[string]eventstore.Head) { m["transaction-m.c"] = eventstore.Head{Version: 9, Hash: h("c9")} }), nil},
		{"tail cut", with(func(m map[string]eventstore.Head) { m["transaction-m.a"] = eventstore.Head{Version: 1, Hash: h("a1")} }),
			[]string{"transaction-m.a@2 missing_events"}},
		{"stream gone", with(func(m map[string]eventstore.Head) { delete(m, "transaction-m.b") }),
			[]string{"transaction-m.b@1 stream_missing"}},
		{"anchored event rewritten", with(func(m map[string]eventstore.Head) {
			m["transaction-m.b"] = eventstore.Head{Version: 2, Hash: h("other")}
		}),
			[]string{"transaction-m.b@2 anchored_event_changed"}},
		{"rewritten then grown", with(func(m map[string]eventstore.Head) { m["transaction-m.b"] = eventstore.Head{Version: 4, Hash: h("b4")} }),
			[]string{"transaction-m.b@2 anchored_event_changed"}},
		{"anchored event gone, later ones kept", with(func(m map[string]eventstore.Head) { m["transaction-m.a"] = eventstore.Head{Version: 4, Hash: h("a4")} }),
			[]string{"transaction-m.a@3 missing_events"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := Check(context.Background(), signedAnchor(t, k, anchored), k.Public(), tc.heads, hashAt)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range fs {
				got = append(got, fmt.Sprintf("%s@%d %s", f.Stream, f.Version, f.Reason))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("findings %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("forged", func(t *testing.T) {
		forged := signedAnchor(t, testKey(t, 5), anchored)
		forged.KeyID = k.Public().ID() // claims to be ours
		fs, _ := Check(context.Background(), forged, k.Public(), map[string]eventstore.Head{}, hashAt)
		if len(fs) != 1 || fs[0].Reason != ReasonSignatureInvalid || fs[0].Stream != "" {
			t.Fatalf("findings %+v, want one anchor_signature_invalid (heads not compared)", fs)
		}
	})
	t.Run("stored heads altered", func(t *testing.T) {
		a := signedAnchor(t, k, anchored)
		a.Heads = cloneHeads(anchored)
		delete(a.Heads, "transaction-m.b") // hide a deleted stream from the comparison
		fs, _ := Check(context.Background(), a, k.Public(), map[string]eventstore.Head{}, hashAt)
		if len(fs) != 1 || fs[0].Reason != ReasonRootMismatch {
			t.Fatalf("findings %+v, want anchor_root_mismatch", fs)
		}
	})
}
