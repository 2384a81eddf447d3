package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   Error
	}{
		{"coded", 403, `{"code":"proof_time","error":"netmap proof time refused","detail":{"x":1}}`,
			Error{Status: 403, Code: wire.CodeProofTime, Message: "netmap proof time refused", Detail: json.RawMessage(`{"x":1}`)}},
		{"older coordinator, no code", 401, `{"error":"unknown join key"}`, Error{Status: 401, Code: wire.CodeUnauthorized, Message: "unknown join key"}},
		{"no code a status implies", 403, `{"error":"public key does not match"}`, Error{Status: 403, Message: "public key does not match"}},
		{"not JSON", 502, "bad gateway\n", Error{Status: 502, Message: "bad gateway"}},
		{"empty", 404, "", Error{Status: 404, Code: wire.CodeNotFound, Message: "Not Found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := handlerClient(t, "", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			_, err := c.Do(context.Background(), "GET", "/v1/x", nil, nil)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if e.Status != tc.want.Status || e.Code != tc.want.Code || e.Message != tc.want.Message || string(e.Detail) != string(tc.want.Detail) {
				t.Errorf("got %+v, want %+v", *e, tc.want)
			}
			if CodeOf(fmt.Errorf("wrapped: %w", err)) != tc.want.Code || StatusOf(err) != tc.want.Status {
				t.Errorf("CodeOf/StatusOf of %v: %q %d", err, CodeOf(err), StatusOf(err))
			}
		})
	}
}

// TestList follows the Link headers page after page, with the token on
// every request, in-process.
func TestList(t *testing.T) {
	c := handlerClient(t, "secret", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(wire.Error{Code: wire.CodeUnauthorized, Error: "token"})
			return
		}
		after, _ := strconv.Atoi(r.URL.Query().Get("after"))
		var page []int
		for i := after + 1; i <= min(after+3, 7); i++ {
			page = append(page, i)
		}
		if after+3 < 7 {
			w.Header().Set("Link", fmt.Sprintf(`<%s?after=%d&limit=3>; rel="next"`, r.URL.Path, after+3))
		}
		json.NewEncoder(w).Encode(page)
	})
	got, err := List[int](context.Background(), c, "/v1/things")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[1 2 3 4 5 6 7]" {
		t.Errorf("List: %v", got)
	}
	if _, err := List[int](context.Background(), c.WithToken("wrong"), "/v1/things"); CodeOf(err) != wire.CodeUnauthorized {
		t.Errorf("List with the wrong token: %v", err)
	}
}

// TestPinned: the client trusts the pinned certificate and nothing else.
func TestPinned(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(wire.CoordinatorKey{PublicKey: "k"})
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	good, err := New(Config{URL: srv.URL, Pins: credential.Pins{credential.CAPin(srv.Certificate())}})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if k, err := good.CoordinatorKey(context.Background()); err != nil || k.PublicKey != "k" {
		t.Errorf("pinned: %v %v", k, err)
	}
	bad, err := New(Config{URL: srv.URL, Pins: credential.Pins{{Kind: credential.PinKey, Sum: [32]byte{1}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.CoordinatorKey(context.Background()); !errors.Is(err, credential.ErrPinMismatch) {
		t.Errorf("another pin: %v, want ErrPinMismatch", err)
	}
	if _, err := New(Config{URL: srv.URL}); err == nil {
		t.Error("a client without a pin was made")
	}
}

func handlerClient(t *testing.T, token string, h http.HandlerFunc) *Client {
	t.Helper()
	c, err := New(Config{Handler: h, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
