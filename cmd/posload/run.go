package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// options are the command line.
type options struct {
	url         string
	name        string
	mode        string
	clients     int
	rate        int
	duration    time.Duration
	warmup      time.Duration
	keys        bool
	merchants   int
	branches    int
	skus        int // sell only the first skus catalogue SKUs; 0: all
	tokens      []string
	stockTokens []string // receive the sales' stock, one per merchant like tokens: minted MANAGERs, or the given tokens (a cashier may receive)
	stockQty    int64    // units of each SKU received at each branch
	timeout     time.Duration
	maxWorkers  int
	serverPID   int
	jsonPath    string
	errorBodies int
	readSide    bool
}

type tokenFlags []string

func (t *tokenFlags) String() string     { return fmt.Sprint(len(*t), " tokens") }
func (t *tokenFlags) Set(v string) error { *t = append(*t, strings.TrimSpace(v)); return nil }

func parseOptions(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("posload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080", "the server's base URL (loopback only)")
	fs.StringVar(&o.name, "name", "", "scenario name in the report (default: from mode and size)")
	fs.StringVar(&o.mode, "mode", "closed", "closed: -clients workers as fast as they go; open: a fixed -rate of commands/s")
	fs.IntVar(&o.clients, "clients", 32, "closed loop: concurrent clients (vegeta workers)")
	fs.IntVar(&o.rate, "rate", 1000, "open loop: commands per second")
	fs.DurationVar(&o.duration, "duration", 15*time.Second, "measured time, after the warm-up")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "load before the measured time, not counted")
	fs.BoolVar(&o.keys, "keys", true, "send an Idempotency-Key with every command")
	fs.IntVar(&o.merchants, "merchants", 16, "merchants to mint tokens for (with POS_JWT_SECRET)")
	fs.IntVar(&o.branches, "branches", 4, "branches per merchant")
	fs.IntVar(&o.skus, "skus", 0, fmt.Sprintf("sell only the first N of the %d catalogue SKUs (1: every line the same SKU, one hot stock ledger per branch); 0: all", len(catalogue)))
	var toks tokenFlags
	fs.Var(&toks, "token", "a CASHIER token (from pos token), one per merchant, with no branch limits (it also receives the stock); repeatable")
	tokensFile := fs.String("tokens-file", "", "a file of tokens, one per line (one per merchant)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.IntVar(&o.maxWorkers, "max-workers", 2000, "open loop: most concurrent requests")
	fs.IntVar(&o.serverPID, "server-pid", 0, "the server's pid, to report its CPU use")
	fs.StringVar(&o.jsonPath, "json", "", "also write the report as JSON to this file")
	fs.IntVar(&o.errorBodies, "error-bodies", 5, "how many error responses to print")
	fs.Int64Var(&o.stockQty, "stock-qty", defaultStockQty, "units of each SKU received at each branch before the sales (checkout reserves stock); 0: none")
	fs.BoolVar(&o.readSide, "read-side", false, "also report the projections from the server's /metrics: events/s applied and lag p50/p99")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: posload [flags]\n       posload reads [flags]   (reads of completed sales; posload reads -h)\n\nTokens come from -token, -tokens-file, or are minted with POS_JWT_SECRET\n(the server's HS256 secret) for -merchants merchants (a CASHIER for the sales\nand a MANAGER for the stock receipts before them, per merchant).\n\nflags:")
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
	case o.mode != "closed" && o.mode != "open":
		return o, fmt.Errorf("-mode %q: want closed or open", o.mode)
	case o.mode == "closed" && o.clients < 1:
		return o, errors.New("-clients must be at least 1")
	case o.mode == "open" && o.rate < 1:
		return o, errors.New("-rate must be at least 1")
	case o.duration <= 0 || o.warmup < 0:
		return o, errors.New("-duration must be positive and -warmup not negative")
	case o.branches < 1 || o.maxWorkers < 1:
		return o, errors.New("-branches and -max-workers must be at least 1")
	case o.skus < 0 || o.skus > len(catalogue):
		return o, fmt.Errorf("-skus must be within 0..%d", len(catalogue))
	case o.stockQty < 0 || o.stockQty > defaultStockQty:
		return o, fmt.Errorf("-stock-qty must be within 0..%d", defaultStockQty)
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
		if secret == "" {
			return o, errors.New("no tokens: pass -token or -tokens-file (from `pos token -merchant <uuid> -role CASHIER`), or set POS_JWT_SECRET to the server's secret")
		}
		if o.merchants < 1 {
			return o, errors.New("-merchants must be at least 1")
		}
		var err error
		if o.tokens, o.stockTokens, err = mintTokens([]byte(secret), o.merchants); err != nil {
			return o, err
		}
	}
	if o.name == "" {
		o.name = fmt.Sprintf("closed-%d", o.clients)
		if o.mode == "open" {
			o.name = fmt.Sprintf("open-%d/s", o.rate)
		}
		if !o.keys {
			o.name += "-nokeys"
		}
	}
	return o, nil
}

// loopbackOnly refuses a target that is not on this machine.
func loopbackOnly(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-url %q is not an http(s) URL", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("-url %q: posload only targets loopback addresses", raw)
}

func readTokens(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if t := strings.TrimSpace(sc.Text()); t != "" {
			out = append(out, t)
		}
	}
	return out, sc.Err()
}

// report is one scenario's outcome; the JSON file has the same fields.
type report struct {
	Name           string          `json:"name"`
	Mode           string          `json:"mode"`
	Clients        int             `json:"clients,omitempty"`
	Rate           int             `json:"rate,omitempty"`
	Keys           bool            `json:"idempotency_keys"`
	Merchants      int             `json:"merchants"`
	SKUs           int             `json:"skus"` // how many SKUs the sales sell
	Duration       float64         `json:"duration_s"`
	Warmup         float64         `json:"warmup_s"`
	Commands       uint64          `json:"commands"` // in the measured window
	OK             uint64          `json:"ok"`
	Errors         uint64          `json:"errors"`
	WarmupCommands uint64          `json:"warmup_commands"`
	WarmupErrors   uint64          `json:"warmup_errors"`
	CommandsPerSec float64         `json:"commands_per_s"` // successful commands / duration
	Sales          uint64          `json:"sales"`          // successful complete steps in the window
	SalesPerSec    float64         `json:"sales_per_s"`
	P50            float64         `json:"p50_ms"`
	P95            float64         `json:"p95_ms"`
	P99            float64         `json:"p99_ms"`
	Mean           float64         `json:"mean_ms"`
	Max            float64         `json:"max_ms"`
	StatusCodes    map[string]int  `json:"status_codes"`
	ErrorSamples   []string        `json:"error_samples"`
	SalesStarted   uint64          `json:"sales_started"`
	SalesDropped   uint64          `json:"sales_dropped"`
	CPU            *cpuUse         `json:"cpu,omitempty"`
	ReadSide       *readSide       `json:"read_side,omitempty"`
	Vegeta         *vegeta.Metrics `json:"vegeta"`
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "reads" {
		return runReads(ctx, args[1:], getenv, stdout, stderr)
	}
	o, err := parseOptions(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	// Stock first, so that neither the warm-up nor the read side's window
	// includes the receipts.
	d, err := prepare(ctx, o, stderr)
	if err != nil {
		return err
	}
	var watch *sideWatch
	if o.readSide {
		watch = watchReadSide(ctx, o.url, time.Now().Add(o.warmup))
	}
	rep, err := attack(ctx, o, d)
	if err != nil {
		return err
	}
	if watch != nil {
		if rep.ReadSide, err = watch.finish(ctx); err != nil {
			return err
		}
	}
	printReport(stdout, rep)
	if o.jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// prepare builds a run's driver (its merchants' branches) and receives the
// stock its sales need there.
func prepare(ctx context.Context, o options, stderr io.Writer) (*driver, error) {
	d := newDriver(o.url, o.keys, o.tokens, o.branches, uint64(time.Now().UnixNano()))
	d.sellOnly(o.skus)
	if err := d.receiveStock(ctx, &http.Client{Timeout: o.timeout}, o.stockTokens, o.stockQty, stderr); err != nil {
		return nil, err
	}
	return d, nil
}

// attack runs one scenario with driver d (its stock received) for warm-up
// plus duration and measures the results that started after the warm-up.
func attack(ctx context.Context, o options, d *driver) (*report, error) {
	transport := &http.Transport{
		DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 10_000,
		DisableCompression:  true,
	}
	client := &http.Client{Timeout: o.timeout, Transport: chainTransport{next: transport, d: d}}
	opts := []func(*vegeta.Attacker){vegeta.Client(client), vegeta.Redirects(vegeta.NoFollow)}
	var pacer vegeta.Pacer
	if o.mode == "closed" {
		// Rate 0 is "as fast as possible": exactly N workers, each sending
		// its next request when its last one is answered.
		pacer = vegeta.Rate{Freq: 0, Per: time.Second}
		opts = append(opts, vegeta.Workers(uint64(o.clients)), vegeta.MaxWorkers(uint64(o.clients)))
	} else {
		pacer = vegeta.Rate{Freq: o.rate, Per: time.Second}
		opts = append(opts, vegeta.Workers(uint64(min(64, o.maxWorkers))), vegeta.MaxWorkers(uint64(o.maxWorkers)))
	}
	atk := vegeta.NewAttacker(opts...)

	begin := time.Now()
	from, until := begin.Add(o.warmup), begin.Add(o.warmup+o.duration)
	cpuc := make(chan *cpuUse, 1)
	go func() { cpuc <- measureCPU(ctx, from, until, o.serverPID) }()
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()

	rep := &report{Name: o.name, Mode: o.mode, Keys: o.keys, Merchants: len(o.tokens), SKUs: len(d.items),
		Duration: o.duration.Seconds(), Warmup: o.warmup.Seconds(), Vegeta: &vegeta.Metrics{}}
	if o.mode == "closed" {
		rep.Clients = o.clients
	} else {
		rep.Rate = o.rate
	}
	for res := range atk.Attack(d.Targeter(), pacer, o.warmup+o.duration, o.name) {
		ok := res.Error == "" && res.Code >= 200 && res.Code < 300
		if res.Timestamp.Before(from) {
			rep.WarmupCommands++
			if !ok {
				rep.WarmupErrors++
				rep.sample(o.errorBodies, res)
			}
			continue
		}
		rep.Vegeta.Add(res)
		rep.Commands++
		if !ok {
			rep.Errors++
			rep.sample(o.errorBodies, res)
			continue
		}
		rep.OK++
		if strings.HasSuffix(res.URL, "/complete") {
			rep.Sales++
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep.Vegeta.Close()
	rep.CPU = <-cpuc
	rep.CommandsPerSec = float64(rep.OK) / o.duration.Seconds()
	rep.SalesPerSec = float64(rep.Sales) / o.duration.Seconds()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	l := rep.Vegeta.Latencies
	rep.P50, rep.P95, rep.P99, rep.Mean, rep.Max = ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Mean), ms(l.Max)
	rep.StatusCodes = rep.Vegeta.StatusCodes
	rep.SalesStarted, _, rep.SalesDropped = d.counts()
	if rep.CPU != nil {
		rep.CPU.perCommand(rep.OK)
	}
	return rep, nil
}

// sample keeps the first few errors, with the response body.
func (r *report) sample(limit int, res *vegeta.Result) {
	if len(r.ErrorSamples) >= limit {
		return
	}
	body := strings.TrimSpace(string(res.Body))
	if len(body) > 500 {
		body = body[:500] + "…"
	}
	r.ErrorSamples = append(r.ErrorSamples, fmt.Sprintf("%s %s: %d %s %s", res.Method, res.URL, res.Code, res.Error, body))
}

func printReport(w io.Writer, r *report) {
	what := fmt.Sprintf("closed loop, %d clients", r.Clients)
	if r.Mode == "open" {
		what = fmt.Sprintf("open loop, %d commands/s", r.Rate)
	}
	keys := "on"
	if !r.Keys {
		keys = "off"
	}
	fmt.Fprintf(w, "scenario %s: %s, idempotency keys %s, %d merchants, %d SKUs; %.0fs measured after %.0fs warm-up\n",
		r.Name, what, keys, r.Merchants, r.SKUs, r.Duration, r.Warmup)
	fmt.Fprintf(w, "  commands  %d (%d ok, %d errors; warm-up: %d, %d errors): %.1f/s\n",
		r.Commands, r.OK, r.Errors, r.WarmupCommands, r.WarmupErrors, r.CommandsPerSec)
	fmt.Fprintf(w, "  sales     %d completed: %.1f/s (started %d, abandoned after an error %d, over the whole run)\n",
		r.Sales, r.SalesPerSec, r.SalesStarted, r.SalesDropped)
	fmt.Fprintf(w, "  latency   p50 %.2f ms, p95 %.2f ms, p99 %.2f ms, mean %.2f ms, max %.2f ms\n",
		r.P50, r.P95, r.P99, r.Mean, r.Max)
	codes := make([]string, 0, len(r.StatusCodes))
	for c, n := range r.StatusCodes {
		codes = append(codes, fmt.Sprintf("%s: %d", c, n))
	}
	sort.Strings(codes)
	fmt.Fprintf(w, "  status    %s\n", strings.Join(codes, ", "))
	if c := r.CPU; c != nil {
		fmt.Fprintf(w, "  CPU       cores busy (of %d): server %.2f, postgres %.2f, load generator %.2f, other %.2f; idle %.2f\n",
			c.Cores, c.Server, c.Postgres, c.LoadGen, c.Other, c.Idle)
		if r.OK > 0 {
			fmt.Fprintf(w, "  per cmd   CPU µs: server %.0f, postgres %.0f, load generator %.0f\n",
				c.ServerPerCmd, c.PostgresPerCmd, c.LoadGenPerCmd)
		}
	}
	if s := r.ReadSide; s != nil {
		drain := "to the drain"
		if !s.Drained {
			drain = "still applying when the watch gave up"
		}
		lag := func(ms float64) string {
			if s.LagTop > 0 && ms >= s.LagTop {
				return fmt.Sprintf("> %.0f ms (the top bucket)", s.LagTop)
			}
			return fmt.Sprintf("%.2f ms", ms)
		}
		fmt.Fprintf(w, "  projected %.0f events applied in the window: %.1f events/s; lag p50 %s, p99 %s over %.0f events (%s)\n",
			s.Events, s.EventsPerSec, lag(s.LagP50), lag(s.LagP99), s.LagCount, drain)
		if s.RelayLagP50 >= 0 {
			fmt.Fprintf(w, "  relayed   append to the broker's acknowledgement: p50 %s, p99 %s\n", lag(s.RelayLagP50), lag(s.RelayLagP99))
		} else {
			fmt.Fprintln(w, "  relayed   no pos_relay_lag_seconds on this server (its relay runs elsewhere, or it predates the metric)")
		}
		fmt.Fprintf(w, "LAG %s %.1f %.2f %.2f %.0f %t %.0f %.2f %.2f\n", r.Name, s.EventsPerSec, s.LagP50, s.LagP99, s.LagCount, s.Drained, s.LagTop,
			s.RelayLagP50, s.RelayLagP99)
	}
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "  error     %s\n", e)
	}
	// One machine-readable line for scripts/load.sh.
	var srv, pg, lg, other float64
	if c := r.CPU; c != nil {
		srv, pg, lg, other = c.Server, c.Postgres, c.LoadGen, c.Other
	}
	fmt.Fprintf(w, "ROW %s %.1f %.1f %.2f %.2f %.2f %d %d %.2f %.2f %.2f %.2f\n", r.Name, r.SalesPerSec, r.CommandsPerSec,
		r.P50, r.P95, r.P99, r.Errors, r.WarmupErrors, srv, pg, lg, other)
}
