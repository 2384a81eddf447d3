// Package credential makes and reads the self-describing secrets of a mesh:
// join keys (all an agent needs to enroll), admin tokens (all the CLI needs
// to administer), the bearer secrets inside them, and the certificate pins
// that make the first contact with a coordinator authenticated.
package credential

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Prefixes of the encoded forms, with their format version.
const (
	JoinKeyPrefix    = "wmjoin1-"
	AdminTokenPrefix = "wmadmin1-"
)

// Secret is a bearer secret "ID.VALUE": ID names it in listings and lookups,
// VALUE is 256 random bits. Only its hash is ever stored.
type Secret struct {
	ID    string
	Value string
}

// NewSecret makes a secret whose ID starts with kind ("jk", "nd", "ad").
func NewSecret(kind string) Secret {
	var id [6]byte
	var v [32]byte
	rand.Read(id[:])
	rand.Read(v[:])
	return Secret{ID: kind + hex.EncodeToString(id[:]), Value: base64.RawURLEncoding.EncodeToString(v[:])}
}

// String returns the bearer form "ID.VALUE".
func (s Secret) String() string { return s.ID + "." + s.Value }

// Hash returns the hex SHA-256 of the secret's value, the form that is
// stored. (The value has 256 bits of entropy, so a fast hash suffices.)
func (s Secret) Hash() string {
	h := sha256.Sum256([]byte(s.Value))
	return hex.EncodeToString(h[:])
}

// Matches reports whether s hashes to hash, in constant time.
func (s Secret) Matches(hash string) bool {
	return subtle.ConstantTimeCompare([]byte(s.Hash()), []byte(hash)) == 1
}

// ParseSecret reads the bearer form "ID.VALUE".
func ParseSecret(s string) (Secret, error) {
	id, v, ok := strings.Cut(s, ".")
	if !ok || id == "" || v == "" {
		return Secret{}, errors.New("malformed secret: want ID.VALUE")
	}
	if len(id) > 64 || len(v) > 128 {
		return Secret{}, errors.New("malformed secret: too long")
	}
	if strings.Trim(id, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return Secret{}, errors.New("malformed secret: the ID must be lowercase letters and digits")
	}
	if _, err := base64.RawURLEncoding.DecodeString(v); err != nil {
		return Secret{}, fmt.Errorf("malformed secret value: %w", err)
	}
	return Secret{ID: id, Value: v}, nil
}

// Bundle is what a join key or an admin token carries: where the
// coordinator is, how to recognise it, and the secret to present.
type Bundle struct {
	// URL is the coordinator's advertised https URL.
	URL string `json:"u"`
	// Pins are the pins of the coordinator's identity (see Pins): its
	// current one and any it announced for its next certificate.
	Pins Pins `json:"p"`
	// Secret is the bearer secret.
	Secret Secret `json:"-"`
	// SecretText is Secret in its bearer form, for encoding.
	SecretText string `json:"s"`
}

// Encode returns the bundle as a single copy-pasteable string with prefix.
func (b Bundle) Encode(prefix string) string {
	b.SecretText = b.Secret.String()
	var j bytes.Buffer
	enc := json.NewEncoder(&j)
	enc.SetEscapeHTML(false) // keep "&" in URLs short
	enc.Encode(b)
	return prefix + base64.RawURLEncoding.EncodeToString(bytes.TrimSpace(j.Bytes()))
}

// ParseJoinKey reads a join key string.
func ParseJoinKey(s string) (Bundle, error) {
	b, err := decode(s, JoinKeyPrefix)
	if err != nil {
		return Bundle{}, fmt.Errorf("malformed join key: %w", err)
	}
	return b, nil
}

// ParseAdminToken reads an admin token string.
func ParseAdminToken(s string) (Bundle, error) {
	b, err := decode(s, AdminTokenPrefix)
	if err != nil {
		return Bundle{}, fmt.Errorf("malformed admin token: %w", err)
	}
	return b, nil
}

func decode(s, prefix string) (Bundle, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, prefix) {
		return Bundle{}, fmt.Errorf("want prefix %q", prefix)
	}
	if len(s) > 4096 {
		return Bundle{}, errors.New("too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(prefix):])
	if err != nil {
		return Bundle{}, fmt.Errorf("bad base64 at byte %d", badBase64At(err, len(prefix)))
	}
	var b Bundle
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return Bundle{}, fmt.Errorf("bad contents: %w", err)
	}
	if len(b.URL) > 512 {
		return Bundle{}, errors.New("coordinator URL longer than 512 bytes")
	}
	u, err := url.Parse(b.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return Bundle{}, fmt.Errorf("bad coordinator URL %q: want https://HOST:PORT", b.URL)
	}
	if len(b.Pins) == 0 {
		return Bundle{}, errors.New("missing certificate pin")
	}
	if b.Secret, err = ParseSecret(b.SecretText); err != nil {
		return Bundle{}, err
	}
	return b, nil
}

func badBase64At(err error, off int) int64 {
	var ce base64.CorruptInputError
	if errors.As(err, &ce) {
		return int64(ce) + int64(off)
	}
	return int64(off)
}
