package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// `posload reads`: GET /v1/transactions/{id} over completed sales, with
// vegeta, at most -connections connections: as fast as they go (closed
// loop), then at a fixed -rate (open loop). The ids are read uniformly at
// random, so every sale is read about as often (no hot set to flatter the
// cache). With -bare the same two attacks also run against a bare chi
// handler in this process that answers the bytes the server gave for one
// of the sales: the floor of what any handler could do on this machine
// with this client. The server's /metrics, read before and after, give the
// cache hit rate of the reads.

// readOptions are `posload reads`' command line.
type readOptions struct {
	url         string
	label       string
	tokens      []string
	stockTokens []string // receive the created sales' stock, as in options
	create      int
	clients     int
	idsPath     string
	connections int
	rate        int
	duration    time.Duration
	warmup      time.Duration
	timeout     time.Duration
	maxWorkers  int
	server      bool
	bare        bool
	jsonPath    string
	errorBodies int
}

func parseReadOptions(args []string, getenv func(string) string, stderr io.Writer) (readOptions, error) {
	var o readOptions
	fs := flag.NewFlagSet("posload reads", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080", "the server's base URL (loopback only)")
	fs.StringVar(&o.label, "label", "server", "prefix of the scenario names in the report")
	var toks tokenFlags
	fs.Var(&toks, "token", "a token (from pos token), one per merchant, with no branch limits (with -create, it also receives the stock); repeatable")
	tokensFile := fs.String("tokens-file", "", "a file of tokens, one per line (one per merchant)")
	merchants := fs.Int("merchants", 16, "merchants to mint tokens for (with POS_JWT_SECRET) when no token is given")
	fs.IntVar(&o.create, "create", 0, "first create this many complete sales and write their ids to -ids")
	fs.IntVar(&o.clients, "create-clients", 16, "concurrent clients creating sales")
	fs.StringVar(&o.idsPath, "ids", "", "file of the sales to read (`token-index transaction-id` per line): written with -create, read otherwise")
	fs.IntVar(&o.connections, "connections", 50, "most connections (and, at max rate, concurrent requests)")
	fs.IntVar(&o.rate, "rate", 5000, "fixed-rate attack: requests/s (0: none)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured time of each attack, after the warm-up")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before the measured time of each attack, not counted")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.IntVar(&o.maxWorkers, "max-workers", 2000, "fixed rate: most requests in flight (waiting for a connection included)")
	fs.BoolVar(&o.server, "server", true, "attack the server (-server=false -create N only creates the sales)")
	fs.BoolVar(&o.bare, "bare", false, "also attack a bare chi handler in this process answering the server's bytes (the floor)")
	fs.StringVar(&o.jsonPath, "json", "", "also write the report as JSON to this file")
	fs.IntVar(&o.errorBodies, "error-bodies", 5, "how many error responses to print per attack")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: posload reads [flags]\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := loopbackOnly(o.url); err != nil {
		return o, err
	}
	o.url = strings.TrimRight(o.url, "/")
	switch {
	case o.idsPath == "":
		return o, errors.New("-ids is required")
	case o.create < 0 || o.clients < 1:
		return o, errors.New("-create must not be negative and -create-clients must be at least 1")
	case o.connections < 1 || o.maxWorkers < 1 || o.rate < 0:
		return o, errors.New("-connections and -max-workers must be at least 1, -rate not negative")
	case o.duration <= 0 || o.warmup < 0:
		return o, errors.New("-duration must be positive and -warmup not negative")
	case !o.server && !o.bare && o.create == 0:
		return o, errors.New("nothing to do: -server=false without -bare or -create")
	}
	o.tokens = toks
	if *tokensFile != "" {
		ts, err := readTokens(*tokensFile)
		if err != nil {
			return o, err
		}
		o.tokens = append(o.tokens, ts...)
	}
	o.stockTokens = o.tokens
	if len(o.tokens) == 0 {
		secret := getenv("POS_JWT_SECRET")
		if secret == "" || *merchants < 1 {
			return o, errors.New("no tokens: pass -token or -tokens-file, or set POS_JWT_SECRET (and -merchants)")
		}
		var err error
		if o.tokens, o.stockTokens, err = mintTokens([]byte(secret), *merchants); err != nil {
			return o, err
		}
	}
	return o, nil
}

// readTarget is one sale to read: the token of its merchant and its id.
type readTarget struct {
	token int
	id    uuid.UUID
}

// readAttack is one attack's outcome.
type readAttack struct {
	Name       string         `json:"name"`
	Target     string         `json:"target"` // server or bare
	Mode       string         `json:"mode"`   // max or fixed
	Rate       int            `json:"rate,omitempty"`
	Conns      int            `json:"connections"`
	Duration   float64        `json:"duration_s"`
	Requests   uint64         `json:"requests"`
	OK         uint64         `json:"ok"`
	Errors     uint64         `json:"errors"`
	WarmupErrs uint64         `json:"warmup_errors"`
	PerSec     float64        `json:"ok_per_s"`
	P50        float64        `json:"p50_ms"`
	P95        float64        `json:"p95_ms"`
	P99        float64        `json:"p99_ms"`
	Max        float64        `json:"max_ms"`
	Codes      map[string]int `json:"status_codes"`
	Samples    []string       `json:"error_samples"`
	// HitRate is the server's cache hit rate during the attack (its
	// warm-up included); -1 for the bare handler or without cached reads.
	HitRate float64 `json:"cache_hit_rate"`
}

// readsReport is `posload reads`' whole outcome.
type readsReport struct {
	Sales   int          `json:"sales"`
	Created int          `json:"created"`
	Attacks []readAttack `json:"attacks"`
	// Cache is the server's cache over every attack on it (warm-ups
	// included, so the misses that fill it count).
	Cache *readSide `json:"cache,omitempty"`
}

func runReads(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parseReadOptions(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	plain := &http.Client{Timeout: o.timeout}
	rep := &readsReport{}
	var targets []readTarget
	if o.create > 0 {
		start := time.Now()
		if targets, err = createSales(ctx, plain, o, stderr); err != nil {
			return err
		}
		if err := writeReadTargets(o.idsPath, targets); err != nil {
			return err
		}
		rep.Created = len(targets)
		fmt.Fprintf(stdout, "created %d complete sales over %d merchants in %.1fs, each visible in the read model\n",
			len(targets), len(o.tokens), time.Since(start).Seconds())
	} else if targets, err = readReadTargets(o.idsPath, len(o.tokens)); err != nil {
		return err
	}
	if len(targets) == 0 {
		return errors.New("no sales to read")
	}
	rep.Sales = len(targets)

	// The floor answers what the server answers for one sale, byte for byte.
	floorURL := ""
	if o.bare {
		status, header, body, err := get(ctx, plain, o.url, o.tokens[targets[0].token], targets[0].id, "")
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("GET transaction %s: %d %s", targets[0].id, status, body)
		}
		stop, url, err := serveBare(header, body)
		if err != nil {
			return err
		}
		defer stop()
		floorURL = url
	}

	type run struct {
		target, base string
		fixed        bool
	}
	var runs []run
	for _, t := range []struct {
		name, base string
		on         bool
	}{{o.label, o.url, o.server}, {"bare", floorURL, o.bare}} {
		if !t.on {
			continue
		}
		runs = append(runs, run{t.name, t.base, false})
		if o.rate > 0 {
			runs = append(runs, run{t.name, t.base, true})
		}
	}
	var first, last readSnapshot
	for _, r := range runs {
		onServer := r.base == o.url
		var before readSnapshot
		if onServer {
			if before, err = scrape(ctx, plain, o.url); err != nil {
				return err
			}
			if first.at.IsZero() {
				first = before
			}
		}
		a, err := attackReads(ctx, o, r.target, r.base, r.fixed, targets)
		if err != nil {
			return err
		}
		a.HitRate = -1
		if onServer {
			if last, err = scrape(ctx, plain, o.url); err != nil {
				return err
			}
			if d := diff(before, last, last); !math.IsNaN(d.HitRate) {
				a.HitRate = d.HitRate
			}
		}
		rep.Attacks = append(rep.Attacks, a)
		printReadAttack(stdout, a)
	}
	if !first.at.IsZero() {
		d := diff(first, last, last)
		rate := "-"
		if !math.IsNaN(d.HitRate) {
			rate = fmt.Sprintf("%.4f", d.HitRate)
		}
		fmt.Fprintf(stdout, "cache over the %s attacks: %.0f hits, %.0f misses, %.0f fallbacks: hit rate %s\n",
			o.label, d.Hits, d.Misses, d.Fallbacks, rate)
		// One machine-readable line for scripts/readbench.sh.
		fmt.Fprintf(stdout, "CACHE %s %.0f %.0f %.0f %s\n", o.label, d.Hits, d.Misses, d.Fallbacks, rate)
		d.reportable()
		rep.Cache = &d
	}
	if o.jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(o.jsonPath, append(b, '\n'), 0o644)
	}
	return nil
}

// jsonFloat maps NaN (no data) to -1, which JSON can carry.
func jsonFloat(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return -1
	}
	return f
}

// attackReads runs one attack on base for warm-up plus duration: fixed at
// o.rate requests/s, or else as fast as o.connections concurrent requests
// go; both through at most o.connections connections.
func attackReads(ctx context.Context, o readOptions, target, base string, fixed bool, targets []readTarget) (readAttack, error) {
	transport := &http.Transport{
		DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		MaxConnsPerHost:     o.connections,
		MaxIdleConnsPerHost: o.connections,
		DisableCompression:  true,
	}
	defer transport.CloseIdleConnections()
	opts := []func(*vegeta.Attacker){vegeta.Client(&http.Client{Timeout: o.timeout, Transport: transport}), vegeta.Redirects(vegeta.NoFollow)}
	a := readAttack{Target: target, Conns: o.connections, Duration: o.duration.Seconds(), Codes: map[string]int{}}
	var pacer vegeta.Pacer
	if fixed {
		a.Mode, a.Rate = "fixed", o.rate
		a.Name = fmt.Sprintf("%s-%d/s", target, o.rate)
		pacer = vegeta.Rate{Freq: o.rate, Per: time.Second}
		opts = append(opts, vegeta.Workers(uint64(min(o.connections, o.maxWorkers))), vegeta.MaxWorkers(uint64(o.maxWorkers)))
	} else {
		a.Mode = "max"
		a.Name = fmt.Sprintf("%s-max-c%d", target, o.connections)
		pacer = vegeta.Rate{Freq: 0, Per: time.Second}
		opts = append(opts, vegeta.Workers(uint64(o.connections)), vegeta.MaxWorkers(uint64(o.connections)))
	}
	headers := make([]http.Header, len(o.tokens))
	for i, t := range o.tokens {
		headers[i] = http.Header{"Authorization": {"Bearer " + t}}
	}
	urls := make([]string, len(targets))
	for i, t := range targets {
		urls[i] = base + "/v1/transactions/" + t.id.String()
	}
	targeter := func(t *vegeta.Target) error {
		i := rand.IntN(len(targets))
		t.Method, t.URL, t.Header = http.MethodGet, urls[i], headers[targets[i].token]
		return nil
	}

	atk := vegeta.NewAttacker(opts...)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	from := time.Now().Add(o.warmup)
	var m vegeta.Metrics
	for res := range atk.Attack(targeter, pacer, o.warmup+o.duration, a.Name) {
		ok := res.Error == "" && res.Code == http.StatusOK
		if res.Timestamp.Before(from) {
			if !ok {
				a.WarmupErrs++
				a.sample(o.errorBodies, res)
			}
			continue
		}
		m.Add(res)
		a.Requests++
		if !ok {
			a.Errors++
			a.sample(o.errorBodies, res)
			continue
		}
		a.OK++
	}
	if err := ctx.Err(); err != nil {
		return a, err
	}
	m.Close()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	a.PerSec = float64(a.OK) / o.duration.Seconds()
	a.P50, a.P95, a.P99, a.Max = ms(m.Latencies.P50), ms(m.Latencies.P95), ms(m.Latencies.P99), ms(m.Latencies.Max)
	a.Codes = m.StatusCodes
	return a, nil
}

func (a *readAttack) sample(limit int, res *vegeta.Result) {
	if len(a.Samples) >= limit {
		return
	}
	body := strings.TrimSpace(string(res.Body))
	if len(body) > 300 {
		body = body[:300] + "…"
	}
	a.Samples = append(a.Samples, fmt.Sprintf("%s %s: %d %s %s", res.Method, res.URL, res.Code, res.Error, body))
}

func printReadAttack(w io.Writer, a readAttack) {
	what := fmt.Sprintf("max rate, %d connections", a.Conns)
	if a.Mode == "fixed" {
		what = fmt.Sprintf("fixed %d req/s, at most %d connections", a.Rate, a.Conns)
	}
	fmt.Fprintf(w, "scenario %s: GET /v1/transactions/{id} on %s, %s; %.0fs measured\n", a.Name, a.Target, what, a.Duration)
	fmt.Fprintf(w, "  requests  %d (%d ok, %d errors; warm-up errors %d): %.1f ok/s\n", a.Requests, a.OK, a.Errors, a.WarmupErrs, a.PerSec)
	fmt.Fprintf(w, "  latency   p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, max %.2f ms\n", a.P50, a.P95, a.P99, a.Max)
	codes := make([]string, 0, len(a.Codes))
	for c, n := range a.Codes {
		codes = append(codes, fmt.Sprintf("%s: %d", c, n))
	}
	sort.Strings(codes)
	fmt.Fprintf(w, "  status    %s\n", strings.Join(codes, ", "))
	if a.HitRate >= 0 {
		fmt.Fprintf(w, "  cache     hit rate %.4f\n", a.HitRate)
	}
	for _, e := range a.Samples {
		fmt.Fprintf(w, "  error     %s\n", e)
	}
	// One machine-readable line for scripts/readbench.sh.
	fmt.Fprintf(w, "ROW %s %s %s %d %.1f %.2f %.2f %.2f %d %d %.4f\n", a.Name, a.Target, a.Mode, a.Rate, a.PerSec,
		a.P50, a.P95, a.P99, a.Errors, a.WarmupErrs, a.HitRate)
}

// serveBare starts the floor on a free loopback port: a chi router whose
// one route answers body with header's Content-Type, ETag and X-Position,
// whatever the id. It returns a function stopping it and its base URL.
func serveBare(header http.Header, body []byte) (stop func(), base string, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	contentType, etag, position := header.Get("Content-Type"), header.Get("ETag"), header.Get("X-Position")
	length := strconv.Itoa(len(body))
	r := chi.NewRouter()
	r.Get("/v1/transactions/{id}", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Content-Length", length)
		h.Set("ETag", etag)
		h.Set("X-Position", position)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, "http://" + ln.Addr().String(), nil
}

// get reads one transaction; minPosition, when set, goes as X-Min-Position
// (the server then waits for the projections and reads PostgreSQL, not the
// cache).
func get(ctx context.Context, client *http.Client, base, token string, id uuid.UUID, minPosition string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/transactions/"+id.String(), nil)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if minPosition != "" {
		req.Header.Set("X-Min-Position", minPosition)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body, err
}

// createSales runs o.create complete sales (the sales load's seven
// commands each, one at a time) on o.clients clients, then waits until each
// is completed in the read model (reading PostgreSQL, so the cache stays
// cold). It returns the sales in the order they completed.
func createSales(ctx context.Context, client *http.Client, o readOptions, stderr io.Writer) ([]readTarget, error) {
	d := newDriver(o.url, true, o.tokens, 4, uint64(time.Now().UnixNano()))
	if err := d.receiveStock(ctx, client, o.stockTokens, defaultStockQty, stderr); err != nil {
		return nil, err
	}
	tokenOf := make(map[string]int, len(o.tokens))
	for i, t := range o.tokens {
		tokenOf["Bearer "+t] = i
	}
	var (
		mu      sync.Mutex
		out     []readTarget
		next    int
		firstEr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range min(o.clients, o.create) {
		wg.Go(func() {
			for {
				mu.Lock()
				if next >= o.create || firstEr != nil {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				d.mu.Lock()
				s := d.newSaleLocked()
				d.mu.Unlock()
				position, err := runSale(ctx, client, d, s)
				if err == nil {
					t := readTarget{token: tokenOf[s.auth], id: s.tx}
					err = awaitCompleted(ctx, client, o.url, o.tokens[t.token], t.id, position)
					if err == nil {
						mu.Lock()
						out = append(out, t)
						mu.Unlock()
						continue
					}
				}
				mu.Lock()
				if firstEr == nil {
					firstEr = err
					cancel()
				}
				mu.Unlock()
				return
			}
		})
	}
	wg.Wait()
	if firstEr != nil {
		return nil, firstEr
	}
	return out, nil
}

// awaitCompleted reads sale id at X-Min-Position position until the read
// model has reached it (the server waits 2 s per request, then answers 503
// not_yet_consistent: a backlog from earlier load may take longer) and
// checks that it is completed.
func awaitCompleted(ctx context.Context, client *http.Client, base, token string, id uuid.UUID, position string) error {
	const patience = 5 * time.Minute
	deadline := time.Now().Add(patience)
	for {
		status, _, body, err := get(ctx, client, base, token, id, position)
		if err != nil {
			return err
		}
		switch {
		case status == http.StatusOK && strings.Contains(string(body), `"status":"completed"`):
			return nil
		case status == http.StatusServiceUnavailable && strings.Contains(string(body), "not_yet_consistent") && time.Now().Before(deadline):
			continue
		}
		return fmt.Errorf("sale %s is not readable as completed at %s (waited up to %s): %d %s", id, position, patience, status, body)
	}
}

// runSale sends sale s's seven commands in order and returns the position
// the last one answered (X-Position).
func runSale(ctx context.Context, client *http.Client, d *driver, s *sale) (string, error) {
	var position string
	for s.next = stepOpen; s.next < stepsPerSale; s.next++ {
		var t vegeta.Target
		if err := d.fill(&t, s); err != nil {
			return "", err
		}
		req, err := t.Request()
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req.WithContext(ctx))
		if err != nil {
			return "", err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return "", err
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return "", fmt.Errorf("%s %s: %d %s", t.Method, t.URL, resp.StatusCode, body)
		}
		position = resp.Header.Get("X-Position")
	}
	return position, nil
}

func writeReadTargets(path string, ts []readTarget) error {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "%d %s\n", t.token, t.id)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// readReadTargets reads what writeReadTargets wrote; every token index must
// be below tokens.
func readReadTargets(path string, tokens int) ([]readTarget, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []readTarget
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want `token-index transaction-id`", path, n)
		}
		i, err := strconv.Atoi(fields[0])
		if err != nil || i < 0 || i >= tokens {
			return nil, fmt.Errorf("%s:%d: token index %q: not one of the %d tokens", path, n, fields[0], tokens)
		}
		id, err := uuid.Parse(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, readTarget{token: i, id: id})
	}
	return out, sc.Err()
}
