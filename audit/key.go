package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Key signs anchors: an Ed25519 private key. The zero Key is not usable.
type Key struct {
	private ed25519.PrivateKey
}

// devSeedPhrase derives the development key. Anyone can derive it, so an
// anchor signed with it proves nothing: cmd/pos warns when it is in use.
const devSeedPhrase = "pos development anchor key: never use in production"

// DevKey returns the fixed development key, used when POS_ANCHOR_KEY is not
// set.
func DevKey() Key {
	seed := sha256.Sum256([]byte(devSeedPhrase))
	return Key{private: ed25519.NewKeyFromSeed(seed[:])}
}

// NewKey returns the key of a 32-byte Ed25519 seed.
func NewKey(seed []byte) (Key, error) {
	if len(seed) != ed25519.SeedSize {
		return Key{}, fmt.Errorf("audit: an Ed25519 seed is %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	return Key{private: ed25519.NewKeyFromSeed(seed)}, nil
}

// ParseKey decodes a base64 (standard or URL alphabet, padded or not)
// 32-byte Ed25519 seed, as POS_ANCHOR_KEY holds it.
func ParseKey(s string) (Key, error) {
	seed, err := decodeBase64(s)
	if err != nil {
		return Key{}, fmt.Errorf("audit: anchor key is not base64: %w", err)
	}
	return NewKey(seed)
}

// Public returns the key that verifies k's signatures.
func (k Key) Public() PublicKey {
	return PublicKey{key: k.private.Public().(ed25519.PublicKey)}
}

// IsDev reports whether k is the development key.
func (k Key) IsDev() bool { return k.Public().Equal(DevKey().Public()) }

func (k Key) sign(msg []byte) []byte { return ed25519.Sign(k.private, msg) }

// PublicKey verifies anchor signatures; an auditor needs only this half.
type PublicKey struct {
	key ed25519.PublicKey
}

// ParsePublicKey decodes a base64 32-byte Ed25519 public key (String's form).
func ParsePublicKey(s string) (PublicKey, error) {
	b, err := decodeBase64(s)
	if err != nil {
		return PublicKey{}, fmt.Errorf("audit: public key is not base64: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("audit: an Ed25519 public key is %d bytes, got %d", ed25519.PublicKeySize, len(b))
	}
	return PublicKey{key: ed25519.PublicKey(b)}, nil
}

// ID names the key in anchors and logs: the first 8 bytes of SHA-256 of the
// public key, in hex. It identifies, it does not authenticate.
func (p PublicKey) ID() string {
	sum := sha256.Sum256(p.key)
	return hex.EncodeToString(sum[:8])
}

// String returns the public key in standard base64.
func (p PublicKey) String() string { return base64.StdEncoding.EncodeToString(p.key) }

// Equal reports whether p and q are the same key.
func (p PublicKey) Equal(q PublicKey) bool { return p.key.Equal(q.key) }

// verify reports whether sig is a valid signature of msg by p. A zero
// PublicKey verifies nothing.
func (p PublicKey) verify(msg, sig []byte) bool {
	return len(p.key) == ed25519.PublicKeySize && ed25519.Verify(p.key, msg, sig)
}

func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	s = strings.NewReplacer("-", "+", "_", "/").Replace(s)
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}
