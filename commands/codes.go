package commands

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"
)

// CodeBlockSize is how many transaction codes one lease reserves.
const CodeBlockSize = 1000

// Codes hands out human-readable transaction codes that are unique within a
// merchant by construction: each process leases disjoint blocks of
// CodeBlockSize numbers from PostgreSQL (one row update per block, not per
// sale, so sales do not queue on a hot row) and formats numbers from its
// block. Numbers of a block a process did not use before it stopped are never
// handed out; codes are unique, not dense.
//
// A code is the number in Crockford base 32 (digits and letters without I,
// L, O, U, so it reads aloud without ambiguity), at least six symbols, in
// groups of three: "000-01F". Codes is safe for concurrent use.
type Codes struct {
	lease func(ctx context.Context, merchant uuid.UUID) (block int64, err error)
	// leasing makes concurrent callers for one merchant share one lease.
	leasing singleflight.Group

	mu     sync.Mutex
	blocks map[uuid.UUID]*codeBlock
}

type codeBlock struct{ next, end int64 }

// NewCodes returns codes leased from the code_blocks table through pool.
//
// Give it a pool of its own (two connections are plenty): a lease runs while
// the request that needs a code may hold a connection of the main pool in
// its idempotency transaction, and a shared pool then deadlocks once every
// connection is held by a request waiting for a lease.
func NewCodes(pool *pgxpool.Pool) *Codes {
	return &Codes{
		blocks: make(map[uuid.UUID]*codeBlock),
		lease: func(ctx context.Context, merchant uuid.UUID) (int64, error) {
			var block int64
			err := pool.QueryRow(ctx, `INSERT INTO code_blocks AS c (merchant_id, next_block) VALUES ($1, 1)
                ON CONFLICT (merchant_id) DO UPDATE SET next_block = c.next_block + 1
                RETURNING next_block - 1`, merchant).Scan(&block)
			if err != nil {
				return 0, fmt.Errorf("lease transaction code block: %w", err)
			}
			return block, nil
		},
	}
}

// Next returns a code no other call for merchant has returned, in any
// process sharing the database.
func (c *Codes) Next(ctx context.Context, merchant uuid.UUID) (string, error) {
	c.mu.Lock()
	b := c.blocks[merchant]
	if b != nil && b.next < b.end {
		n := b.next
		b.next++
		c.mu.Unlock()
		return FormatCode(n), nil
	}
	c.mu.Unlock()

	// Lease outside the lock, once for all concurrent callers of this
	// merchant; then take a number from whatever block is current.
	_, err, _ := c.leasing.Do(merchant.String(), func() (any, error) {
		c.mu.Lock()
		b := c.blocks[merchant]
		fresh := b != nil && b.next < b.end
		c.mu.Unlock()
		if fresh { // another caller's lease landed meanwhile
			return nil, nil
		}
		// Shared by every waiting caller: one caller's cancellation must not
		// fail the others, but a lease still ends.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		block, err := c.lease(lctx, merchant)
		if err != nil {
			return nil, err
		}
		// Block b holds numbers b×size+1 … (b+1)×size: codes start at 1.
		start := block*CodeBlockSize + 1
		c.mu.Lock()
		c.blocks[merchant] = &codeBlock{next: start, end: start + CodeBlockSize}
		c.mu.Unlock()
		return nil, nil
	})
	if err != nil {
		return "", err
	}
	return c.Next(ctx, merchant)
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// FormatCode renders n as a transaction code (see Codes).
func FormatCode(n int64) string {
	var digits []byte
	for v := uint64(n); v > 0; v /= 32 {
		digits = append(digits, crockford[v%32])
	}
	for len(digits) < 6 {
		digits = append(digits, '0')
	}
	var b strings.Builder
	for i := len(digits) - 1; i >= 0; i-- {
		b.WriteByte(digits[i])
		if i > 0 && i%3 == 0 {
			b.WriteByte('-')
		}
	}
	return b.String()
}
