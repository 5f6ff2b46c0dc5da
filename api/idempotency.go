package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"pos/commands"
	"pos/eventstore"
	"pos/internal/pgtx"
)

// Idempotency keys.
//
// A command sent with an Idempotency-Key runs at most once per merchant and
// key. The first response (status, the headers that matter, body) is stored
// and replayed byte for byte to every later request with the same key, method,
// path and body; the same key with another request answers 422
// idempotency_key_reused.
//
// With the PostgreSQL event store the key record commits in the same
// transaction as the command's events: the handler runs against a store bound
// to that transaction, and the key row is inserted last, in the same query as
// the COMMIT (commitWithKey). Either both commit or neither does, so a failed
// or crashed attempt leaves the key free and a retry is never applied twice.
//
// A duplicate arriving while the first request is still running waits for it:
// its own key insert blocks on the first transaction's uncommitted row until
// that commits (then the duplicate's work is rolled back and the stored
// response replayed) or rolls back (then the duplicate's work commits as the
// first). Responses are not stored for 5xx and for 409 concurrency_conflict,
// which are worth retrying, nor for 401/403, which are about the caller and
// not the command; every other status is final for the key.
//
// With EventStoreDB there is no transaction spanning both stores. The key is
// then claimed first (a row without a response), the command runs, and the
// response is stored; a failure deletes the claim. A duplicate waits (up to
// keyWait) for the claim to resolve, then answers 409. A crash between the
// command and storing its response leaves the claim, and once it is older
// than claimLease a retry runs again: that window is the price of two stores.
//
// Every attempt of a keyed request names what it creates alike (idSeed,
// commands.Meta.IDSeed): a sale, line, payment, refund or stock movement
// the client left unnamed gets an id derived from the merchant, key and
// request. Effects that outlive a failed attempt (a stock ledger, written
// outside the request's transaction; anything on EventStoreDB) are then
// recognised by a retry instead of repeated: a stock movement already made
// changes nothing, a payment already made answers 409 already_exists. And
// on PostgreSQL a request whose key is already stored never reaches a
// ledger: before its first write there it claims the key in its
// transaction (keyClaim), which finds the stored key first. A key
// therefore names one operation for good: the same key and request sent
// again after the key's record was purged is taken as that operation too.
//
// Keys are per merchant, not per user, so who may have a stored answer
// replayed is checked first. Roles are checked by the routes, before this
// middleware. A branch (a sale's, a ledger's) is known only to the command:
// on PostgreSQL a caller the command refuses for its branch gets its 403,
// never the answer stored for someone else. With EventStoreDB a stored
// answer is replayed before the command runs, so a caller limited to
// another branch who sends the same key and request gets that answer (the
// aggregate's id, version and position; the command is not run again).

const (
	keyTTL      = 25 * time.Hour // keys are kept at least 24 h
	keyMaxLen   = 255
	keyAttempts = 8
	keyWait     = 10 * time.Second
	claimLease  = time.Minute
)

// replayedHeaders are the response headers stored with a key.
var replayedHeaders = []string{"Content-Type", "ETag", "X-Position", "Location", "Retry-After"}

// storedResponse is a response as kept with its key.
type storedResponse struct {
	hash    []byte
	status  int
	headers map[string]string
	body    []byte
}

// keyStore keeps idempotency records in PostgreSQL. It is safe for
// concurrent use.
type keyStore struct {
	pool *pgxpool.Pool
}

func (k keyStore) lookup(ctx context.Context, merchant uuid.UUID, key string) (storedResponse, bool, error) {
	var r storedResponse
	var headers []byte
	var created time.Time
	err := k.pool.QueryRow(ctx, `SELECT request_hash, status_code, headers, body, created_at FROM idempotency_keys
        WHERE merchant_id = $1 AND key = $2`, merchant, key).Scan(&r.hash, &r.status, &headers, &r.body, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("idempotency: look up key: %w", err)
	}
	if err := json.Unmarshal(headers, &r.headers); err != nil {
		return r, false, fmt.Errorf("idempotency: decode headers: %w", err)
	}
	if r.status == 0 && time.Since(created) > claimLease {
		// An abandoned claim (EventStoreDB mode): free it.
		_, err := k.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND status_code = 0 AND created_at = $3`, merchant, key, created)
		if err != nil {
			return r, false, fmt.Errorf("idempotency: free abandoned claim: %w", err)
		}
		return r, false, nil
	}
	return r, true, nil
}

// commitWithKey records a response with its key in tx and commits tx, in
// one round trip (pgtx.Lazy.ExecCommit). The insert first takes the key's
// lock (keyLock), so it waits for a request that claimed the key
// (keyClaim) to end. A key that another request stored first (its
// transaction waited for, then a unique violation) stops the query before
// its COMMIT: inserted is false, and the work is rolled back (by
// tx.Rollback, or already when the insert was its first statement).
func commitWithKey(ctx context.Context, tx *pgtx.Lazy, merchant uuid.UUID, key string, r storedResponse) (inserted bool, err error) {
	headers, err := json.Marshal(r.headers)
	if err != nil {
		return false, err
	}
	body := r.body
	if body == nil {
		body = []byte{} // nil would be NULL
	}
	_, err = tx.ExecCommit(ctx, `INSERT INTO idempotency_keys (merchant_id, key, request_hash, status_code, headers, body)
        SELECT $1, $2, $3, $4, $5, $6 FROM pg_advisory_xact_lock($7, hashtext($8))`,
		merchant.String(), key, r.hash, r.status, string(headers), body, keyLockClass, keyLock(merchant, key))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("idempotency: store key and commit: %w", err)
	}
	return true, nil
}

// keyLockClass is the first key of the idempotency keys' transaction-level
// advisory locks ("keys"); keyLock names the second (hashed by the
// server: two keys sharing a hash only wait for each other).
const keyLockClass int32 = 0x6b657973

func keyLock(merchant uuid.UUID, key string) string { return merchant.String() + "/" + key }

// keyClaim is a keyed request's claim on its key, taken in the request's
// transaction before the command's first write outside it (a stock
// ledger's, commands.WithOutsideWriteGuard). Such a write commits on its
// own, so the key insert at COMMIT, which rolls back the work of a request
// whose key another stored first, would come too late for it: a retry of
// a refused checkout would reserve the stock, a key reused for another
// receipt would receive its units, and only the answer would say
// otherwise. The claim takes the key's lock and then looks the key up (two
// statements, so the look-up sees what the lock's last holder committed):
// the lock waits for a request holding it (a claim, or a key insert at
// COMMIT, commitWithKey) to end, and when the key is stored the command
// writes nothing and the request replays the stored answer (taken). A lock
// and a read take no transaction id, so a claim never holds back the
// store's feed while the command works on ledgers, as a key row inserted
// early would. The lock ends with the transaction. Used by one request's
// goroutine.
type keyClaim struct {
	tx       *pgtx.Lazy
	merchant uuid.UUID
	key      string
	held     bool // the lock is this transaction's, and the key was free
	taken    bool // another request stored the key first
}

// take is the request's outside-write guard.
func (c *keyClaim) take(ctx context.Context) error {
	switch {
	case c.held:
		return nil
	case c.taken:
		return errConflict
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT pg_advisory_xact_lock($1, hashtext($2))`, keyLockClass, keyLock(c.merchant, c.key))
	b.Queue(`SELECT EXISTS (SELECT FROM idempotency_keys WHERE merchant_id = $1 AND key = $2)`, c.merchant.String(), c.key).
		QueryRow(func(row pgx.Row) error { return row.Scan(&c.taken) })
	if err := c.tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("idempotency: claim key: %w", err)
	}
	if c.taken {
		return errConflict
	}
	c.held = true
	return nil
}

// purge deletes keys older than keyTTL, a batch at a time, and returns how
// many it deleted.
func (k keyStore) purge(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := k.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE ctid IN (
            SELECT ctid FROM idempotency_keys WHERE created_at < now() - $1::interval ORDER BY created_at LIMIT 5000)`,
			fmt.Sprintf("%d seconds", int(keyTTL.Seconds())))
		if err != nil {
			return total, fmt.Errorf("idempotency: purge: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 5000 {
			return total, nil
		}
	}
}

// PurgeExpiredKeys deletes idempotency keys older than their retention
// (25 h) and returns how many it deleted.
func (s *Server) PurgeExpiredKeys(ctx context.Context) (int64, error) { return s.keys.purge(ctx) }

// PurgeKeys calls PurgeExpiredKeys every interval until ctx ends. Failures
// are logged and retried at the next tick.
func (s *Server) PurgeKeys(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := s.keys.purge(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("idempotency key purge failed", "err", err)
		} else if n > 0 {
			s.log.Info("idempotency keys purged", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// forward is the body a keyed request's command reads: the one read, or
// none (nil) when the request had none, so that the command sees the
// request as sent (a body with no Content-Type would be refused, 415).
func forward(body []byte) io.ReadCloser {
	if body == nil {
		return http.NoBody
	}
	return readerOf(body)
}

// idSeedKey is the context key of a keyed request's id seed.
type idSeedKey struct{}

// idSeedSpace is the UUID namespace of id seeds.
var idSeedSpace = uuid.MustParse("0193a5c4-5eed-7000-8000-1de000000001")

// idSeed is the commands.Meta.IDSeed of a request with an Idempotency-Key:
// every attempt of the same request (merchant, key, method, path, body)
// names the entities it creates alike, and another request under the same
// key (refused with 422 while the key is kept) never meets them.
func idSeed(merchant uuid.UUID, key string, hash []byte) uuid.UUID {
	name := make([]byte, 0, len(merchant)+len(key)+1+len(hash))
	name = append(append(append(append(name, merchant[:]...), key...), 0), hash...)
	return uuid.NewSHA1(idSeedSpace, name)
}

// requestHash identifies a request for its key: method, path and body.
func requestHash(r *http.Request, body []byte) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", r.Method, r.URL.Path)
	h.Write(body)
	return h.Sum(nil)
}

func validKey(k string) bool {
	if k == "" || len(k) > keyMaxLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// idempotent is the middleware of every command route; see the top of this
// file. It must run after authentication (keys are per merchant).
func (s *Server) idempotent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			next.ServeHTTP(w, r)
			return
		}
		if !validKey(key) {
			s.fail(w, r, invalid("Idempotency-Key must be 1 to 255 visible ASCII characters", FieldError{Field: "Idempotency-Key", Code: "invalid"}))
			return
		}
		// A header the key's request hash leaves out must be valid before
		// the key is consulted: a malformed If-Match answered by the
		// command (before its branch check) would otherwise give way to the
		// stored answer, whoever stored it.
		if _, err := ifMatch(r); err != nil {
			s.fail(w, r, err)
			return
		}
		bodiless := r.Body == nil || r.Body == http.NoBody
		body, err := readBody(w, r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		merchant := principalOf(r).MerchantID
		hash := requestHash(r, body)
		if bodiless {
			body = nil // the command gets no body, as without a key (forward)
		}
		r = r.WithContext(context.WithValue(r.Context(), idSeedKey{}, idSeed(merchant, key, hash)))
		if s.txStore != nil {
			s.idempotentTx(w, r, next, merchant, key, hash, body)
		} else {
			s.idempotentClaim(w, r, next, merchant, key, hash, body)
		}
	})
}

func (s *Server) idempotentTx(w http.ResponseWriter, r *http.Request, next http.Handler, merchant uuid.UUID, key string, hash, body []byte) {
	ctx := r.Context()
	for attempt := 1; ; attempt++ {
		// The first attempt does not look the key up: the key insert at its
		// end finds a stored key anyway (and rolls the work back), which
		// saves a round trip on every new command. Later attempts replay.
		if attempt > 1 && s.replayed(w, r, merchant, key, hash) {
			return
		}
		rec, again, err := s.attemptTx(r, next, merchant, key, hash, body)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !again {
			// An answer that was not stored may stand for a key stored
			// long ago: that answer wins, unless this caller may not send
			// the command (another branch's sale): it gets its 403, not
			// the answer someone else was given.
			if !rec.committed && attempt == 1 && !rec.aboutCaller() && s.replayed(w, r, merchant, key, hash) {
				return
			}
			rec.flush(w)
			return
		}
		if attempt == keyAttempts {
			if rec == nil { // the key stayed taken by a claim that never resolved
				rec = newRecorder()
				writeProblem(rec, errConflict)
			}
			rec.flush(w)
			return
		}
		// Jittered pause before a new transaction, so racing requests of
		// one aggregate spread out instead of colliding again.
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(1+rand.IntN(5*attempt)) * time.Millisecond):
		}
	}
}

// attemptTx runs the command once in a new transaction with its key. again
// reports an outcome worth another attempt: a concurrency conflict, or the
// key stored by another request meanwhile (then rec is nil).
func (s *Server) attemptTx(r *http.Request, next http.Handler, merchant uuid.UUID, key string, hash, body []byte) (rec *recorder, again bool, err error) {
	ctx := r.Context()
	// A connection of our own rather than pool.Begin's: the transaction
	// sends its BEGIN with its first statement and commits with its last
	// (pgtx.Lazy); the connection then goes back to the pool idle.
	conn, err := s.keys.pool.Acquire(ctx)
	if err != nil {
		return nil, false, err
	}
	defer conn.Release()
	tx := pgtx.Begin(conn.Conn())
	// Every path ends the transaction, a panic included: an abandoned one
	// would hold back every feed reader (see pgstore). After ExecCommit,
	// Rollback sends nothing.
	defer func() { _ = tx.Abort(ctx) }()

	rec = newRecorder()
	view := s.txStore(tx)
	claim := &keyClaim{tx: tx, merchant: merchant, key: key}
	rq := r.WithContext(commands.WithOutsideWriteGuard(withStore(ctx, view), claim.take))
	rq.Body = forward(body)
	next.ServeHTTP(rec, rq)
	if claim.taken {
		return nil, true, nil // stored by another request before our first outside write: replay it
	}
	if rec.retryable() {
		return rec, rec.isConflict(), nil
	}
	if !rec.storable() {
		return rec, false, nil
	}
	inserted, err := commitWithKey(ctx, tx, merchant, key, rec.stored(hash))
	if pgtx.Retryable(err) {
		return nil, true, nil // rolled back by a deadlock (a key reused on one aggregate at once): again
	}
	if err != nil {
		return nil, false, err
	}
	if !inserted {
		return nil, true, nil // another request stored the key first: replay it
	}
	if v, ok := view.(eventstore.TxBound); ok {
		v.Committed() // caches may now hold what it appended
	}
	rec.committed = true
	return rec, false, nil
}

func (s *Server) idempotentClaim(w http.ResponseWriter, r *http.Request, next http.Handler, merchant uuid.UUID, key string, hash, body []byte) {
	ctx := r.Context()
	deadline := time.Now().Add(keyWait)
	for {
		if s.replayed(w, r, merchant, key, hash) {
			return
		}
		claimed, err := s.claim(ctx, merchant, key, hash)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if claimed {
			break
		}
		if time.Now().After(deadline) {
			s.fail(w, r, errConflict)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(25 * time.Millisecond):
		}
	}
	rec := newRecorder()
	rq := r.WithContext(ctx)
	rq.Body = forward(body)
	next.ServeHTTP(rec, rq)
	// Resolve the claim even if the client went away: a claim left behind
	// would let a retry run the command again after claimLease.
	ctx = context.WithoutCancel(ctx)
	var err error
	if rec.retryable() || !rec.storable() {
		_, err = s.keys.pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND status_code = 0`, merchant, key)
	} else {
		st := rec.stored(hash)
		headers, _ := json.Marshal(st.headers)
		_, err = s.keys.pool.Exec(ctx, `UPDATE idempotency_keys SET status_code = $3, headers = $4, body = $5
            WHERE merchant_id = $1 AND key = $2 AND status_code = 0`, merchant, key, st.status, headers, st.body)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "idempotency: resolve claim", "err", err)
	}
	rec.flush(w)
}

// claim inserts a key row without a response; false when it exists.
func (s *Server) claim(ctx context.Context, merchant uuid.UUID, key string, hash []byte) (bool, error) {
	tag, err := s.keys.pool.Exec(ctx, `INSERT INTO idempotency_keys (merchant_id, key, request_hash, status_code, headers, body)
        VALUES ($1, $2, $3, 0, '{}', '') ON CONFLICT (merchant_id, key) DO NOTHING`, merchant, key, hash)
	if err != nil {
		return false, fmt.Errorf("idempotency: claim key: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// replayed answers from a stored key when there is one, and reports whether
// it did (a 422 for another request counts). A claim in progress answers
// nothing: the caller waits.
func (s *Server) replayed(w http.ResponseWriter, r *http.Request, merchant uuid.UUID, key string, hash []byte) bool {
	st, found, err := s.keys.lookup(r.Context(), merchant, key)
	if err != nil {
		s.fail(w, r, err)
		return true
	}
	if !found {
		return false
	}
	if !bytes.Equal(st.hash, hash) {
		s.fail(w, r, errKeyReused)
		return true
	}
	if st.status == 0 {
		return false
	}
	for k, v := range st.headers {
		w.Header().Set(k, v)
	}
	w.Header().Set("Idempotent-Replayed", "true")
	w.WriteHeader(st.status)
	_, _ = w.Write(st.body)
	return true
}

// recorder captures a handler's response so it can be stored before it is
// sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	// committed is set once the response is stored with its key.
	committed bool
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (rec *recorder) Header() http.Header { return rec.header }

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.body.Write(b)
}

func (rec *recorder) isConflict() bool {
	if rec.status != http.StatusConflict {
		return false
	}
	var p struct {
		Code string `json:"code"`
	}
	return json.Unmarshal(rec.body.Bytes(), &p) == nil && p.Code == "concurrency_conflict"
}

// retryable responses are not stored: the same request may succeed later.
func (rec *recorder) retryable() bool { return rec.status >= 500 || rec.isConflict() }

// storable responses are final for their key. A 403 is not: it says who
// asked, not what the command did, and the same key may come back from
// someone allowed to send it. Nor is a 412: it says the client's If-Match
// (which the request's hash leaves out) was stale, and the command did
// nothing; the client reloads and sends the command again, often under the
// same key, and must then have it run, not see the 412 forever.
func (rec *recorder) storable() bool {
	return !rec.retryable() && !rec.aboutCaller() && rec.status != http.StatusPreconditionFailed
}

// aboutCaller reports a refusal of the caller (401, 403) rather than an
// outcome of the command.
func (rec *recorder) aboutCaller() bool {
	return rec.status == http.StatusForbidden || rec.status == http.StatusUnauthorized
}

func (rec *recorder) stored(hash []byte) storedResponse {
	h := make(map[string]string)
	for _, k := range replayedHeaders {
		if v := rec.header.Get(k); v != "" {
			h[k] = v
		}
	}
	return storedResponse{hash: hash, status: rec.status, headers: h, body: rec.body.Bytes()}
}

func (rec *recorder) flush(w http.ResponseWriter) {
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())
}

// storeKey is the context key of a request's event store view.
type storeKey struct{}

func withStore(ctx context.Context, s eventstore.Store) context.Context {
	return context.WithValue(ctx, storeKey{}, s)
}

// storeFor returns the event store a handler must use for r: the one bound
// to the request's idempotency transaction, or the server's.
func (s *Server) storeFor(r *http.Request) eventstore.Store {
	if st, ok := r.Context().Value(storeKey{}).(eventstore.Store); ok {
		return st
	}
	return s.store
}
