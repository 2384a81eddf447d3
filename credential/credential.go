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
	"io"
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
	// OtherURLs are the URLs of the other coordinators that share its
	// database (and of itself at other names), tried when URL does not
	// answer. Empty: one coordinator.
	OtherURLs []string `json:"us,omitempty"`
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

// ParseJoinKey reads a join key string. Its errors say what the text is
// instead when it is not a join key (an admin token, a file path) and
// whether it was cut short.
func ParseJoinKey(s string) (Bundle, error) {
	return parse(s, JoinKeyPrefix, "join key", AdminTokenPrefix, "an admin token, not a join key")
}

// ParseAdminToken reads an admin token string, with errors like
// ParseJoinKey's.
func ParseAdminToken(s string) (Bundle, error) {
	return parse(s, AdminTokenPrefix, "admin token", JoinKeyPrefix, "a join key, not an admin token")
}

// parse decodes a bundle of kind that starts with prefix; text with
// otherPrefix is named as what it is (other).
func parse(s, prefix, kind, otherPrefix, other string) (Bundle, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, otherPrefix):
		return Bundle{}, fmt.Errorf("this is %s: %ss start with %s", other, kind, prefix)
	case !strings.HasPrefix(s, prefix):
		return Bundle{}, fmt.Errorf("this is not %s %s (they start with %s)", article(kind), kind, prefix)
	}
	b, err := decode(s, prefix)
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return Bundle{}, fmt.Errorf("this is not %s %s (they start with %s, then its encoded contents): the contents do not decode (%v); copy the whole %s again", article(kind), kind, prefix, err, kind)
	case errors.Is(err, errTruncated):
		return Bundle{}, fmt.Errorf("this %s is truncated (%d characters, too short for its contents): copy the whole %s", kind, len(s), kind)
	case err != nil:
		return Bundle{}, fmt.Errorf("malformed %s: %w (copy the whole %s again)", kind, err, kind)
	}
	return b, nil
}

func article(kind string) string {
	if strings.IndexByte("aeiou", kind[0]) >= 0 {
		return "an"
	}
	return "a"
}

const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// errTruncated is decode's error for a string cut short.
var errTruncated = errors.New("truncated")

func decode(s, prefix string) (Bundle, error) {
	if len(s) > 4096 {
		return Bundle{}, errors.New("too long")
	}
	enc := s[len(prefix):]
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		at := badBase64At(err, 0)
		// One character past a 4-character group cannot be data: the
		// string was cut there.
		if len(enc)%4 == 1 && at == int64(len(enc)-1) && strings.Trim(enc, base64URLAlphabet) == "" {
			return Bundle{}, errTruncated
		}
		return Bundle{}, fmt.Errorf("bad base64 at byte %d", at+int64(len(prefix)))
	}
	var b Bundle
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return Bundle{}, errTruncated
		}
		return Bundle{}, fmt.Errorf("bad contents: %w", err)
	}
	if err := CheckURL(b.URL); err != nil {
		return Bundle{}, err
	}
	if len(b.OtherURLs) >= MaxURLs {
		return Bundle{}, fmt.Errorf("%d coordinator URLs: at most %d", len(b.OtherURLs)+1, MaxURLs)
	}
	for _, u := range b.OtherURLs {
		if err := CheckURL(u); err != nil {
			return Bundle{}, err
		}
	}
	if len(b.Pins) == 0 {
		return Bundle{}, errors.New("missing certificate pin")
	}
	if b.Secret, err = ParseSecret(b.SecretText); err != nil {
		return Bundle{}, err
	}
	return b, nil
}

// MaxURLs bounds the coordinator URLs a join key, an admin token or a
// netmap carries.
const MaxURLs = 16

// URLs returns the coordinator URLs b names: URL, then OtherURLs.
func (b Bundle) URLs() []string { return append([]string{b.URL}, b.OtherURLs...) }

// CheckURL reports what is wrong with u as a coordinator URL: it must be
// https://HOST:PORT, at most 512 bytes.
func CheckURL(u string) error {
	if len(u) > 512 {
		return errors.New("coordinator URL longer than 512 bytes")
	}
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "https" || p.Host == "" || p.User != nil || (p.Path != "" && p.Path != "/") || p.RawQuery != "" || p.Fragment != "" {
		return fmt.Errorf("bad coordinator URL %q: want https://HOST:PORT", u)
	}
	return nil
}

func badBase64At(err error, off int) int64 {
	var ce base64.CorruptInputError
	if errors.As(err, &ce) {
		return int64(ce) + int64(off)
	}
	return int64(off)
}
