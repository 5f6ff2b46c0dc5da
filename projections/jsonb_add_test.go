package projections

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"

	"pos/internal/pgtest"
)

// TestJSONBAddMatchesTheAggregate holds the migrations' rm_jsonb_add (the
// PL/pgSQL one of 00015) to the results of the SQL aggregate it replaced,
// on edge cases and on random objects of a few payment methods: keys added
// one by one, sums of 0 dropped (a's own zeros too), NULL as {}, a JSON null
// skipped, sums past bigint's range kept exact, and non-integer values
// refused by both.
func TestJSONBAddMatchesTheAggregate(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `
        CREATE FUNCTION pg_temp.aggregate_add(a jsonb, b jsonb) RETURNS jsonb
        LANGUAGE sql IMMUTABLE AS $$
            SELECT coalesce(jsonb_object_agg(k, s), '{}'::jsonb)
            FROM (
                SELECT k, sum(v) AS s
                FROM (
                    SELECT key AS k, value::bigint AS v FROM jsonb_each_text(coalesce(a, '{}'::jsonb))
                    UNION ALL
                    SELECT key, value::bigint FROM jsonb_each_text(coalesce(b, '{}'::jsonb))
                ) kv
                GROUP BY k
            ) sums
            WHERE s <> 0
        $$`); err != nil {
		t.Fatalf("create the aggregate: %v", err)
	}
	if n := language(ctx, t, conn); n != "plpgsql" {
		t.Fatalf("rm_jsonb_add is in %s, want plpgsql (migration 00015)", n)
	}
	cases := [][2]*string{
		{nil, nil},
		{ptr(`{}`), nil},
		{nil, ptr(`{"CASH": 5}`)},
		{ptr(`{"CASH": 5}`), ptr(`{"CASH": -5, "CARD": 3}`)},
		{ptr(`{"CASH": 0, "CARD": 2}`), ptr(`{}`)},
		{ptr(`{"CASH": 9223372036854775807}`), ptr(`{"CASH": 9223372036854775807}`)},
		{ptr(`{"QRIS": -7}`), ptr(`{"QRIS": 7, "EWALLET": -1}`)},
		{ptr(`{"CASH": 5}`), ptr(`{"CASH": null, "CARD": null}`)},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	methods := []string{"CASH", "CARD", "QRIS", "EWALLET"}
	random := func() *string {
		m := map[string]int64{}
		for _, k := range methods {
			if rng.IntN(2) == 0 {
				m[k] = rng.Int64N(7) - 3
			}
		}
		b, _ := json.Marshal(m)
		s := string(b)
		return &s
	}
	for range 200 {
		cases = append(cases, [2]*string{random(), random()})
	}
	for _, c := range cases {
		var want, got *string
		if err := conn.QueryRow(ctx, `SELECT pg_temp.aggregate_add($1, $2)::text, rm_jsonb_add($1, $2)::text`, c[0], c[1]).Scan(&want, &got); err != nil {
			t.Fatalf("add %s and %s: %v", show(c[0]), show(c[1]), err)
		}
		if show(want) != show(got) {
			t.Errorf("add %s and %s: got %s, the aggregate gave %s", show(c[0]), show(c[1]), show(got), show(want))
		}
	}
	for _, bad := range []string{`{"CASH": 1.5}`, `{"CASH": "x"}`} {
		var got *string
		if err := conn.QueryRow(ctx, `SELECT rm_jsonb_add('{}', $1)::text`, bad).Scan(&got); err == nil {
			t.Errorf("add %s: got %s, want an error as the aggregate gives", bad, show(got))
		}
	}
}

func language(ctx context.Context, t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var lang string
	if err := conn.QueryRow(ctx, `SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
        WHERE p.oid = 'public.rm_jsonb_add(jsonb, jsonb)'::regprocedure`).Scan(&lang); err != nil {
		t.Fatalf("read rm_jsonb_add's language: %v", err)
	}
	return lang
}

func ptr(s string) *string { return &s }

func show(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}
