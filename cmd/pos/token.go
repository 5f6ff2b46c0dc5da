package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"

	"pos/api/auth"
)

// branchFlags collects repeated -branch flags.
type branchFlags []uuid.UUID

func (b *branchFlags) String() string { return fmt.Sprint(*b) }

func (b *branchFlags) Set(v string) error {
	id, err := uuid.Parse(v)
	if err != nil {
		return fmt.Errorf("branch %q is not a UUID", v)
	}
	*b = append(*b, id)
	return nil
}

// token mints an HS256 JWT with the configured secret, for trying the API
// locally with curl.
func token(cfg config, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	merchant := fs.String("merchant", "", "merchant id (UUID), required")
	role := fs.String("role", "CASHIER", "CASHIER, MANAGER, ADMIN or AUDITOR")
	sub := fs.String("sub", "local-user", "the user (sub claim)")
	ttl := fs.Duration("ttl", 8*time.Hour, "lifetime")
	var branches branchFlags
	fs.Var(&branches, "branch", "a branch the user is limited to (repeatable); none means every branch")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// A stray word stops flag parsing: the flags after it would be
		// ignored, and the token minted with defaults (a CASHIER).
		return fmt.Errorf("token: unexpected arguments %q (flags only: -merchant, -role, ...)", fs.Args())
	}
	m, err := uuid.Parse(*merchant)
	if err != nil {
		return errors.New("token: -merchant must be a UUID")
	}
	if cfg.JWKSURL != "" {
		return errors.New("token: POS_JWKS_URL is set; tokens come from that issuer, not from here")
	}
	secret := cfg.JWTSecret
	if secret == "" {
		secret = devJWTSecret
	}
	tok, err := auth.Mint([]byte(secret), auth.Principal{Subject: *sub, MerchantID: m,
		Role: auth.Role(strings.ToUpper(*role)), BranchIDs: branches}, *ttl, time.Now())
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
