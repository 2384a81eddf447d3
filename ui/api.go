package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/wiremesh/wiremesh/wire"
)

// APIError is a non-2xx answer of the admin API.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the wire.Error code, what the UI branches on.
	Code wire.ErrorCode
	// Message is the wire.Error message, for a person.
	Message string
	// Detail is the wire.Error detail, undecoded. Nil: none.
	Detail json.RawMessage
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// apiClient calls the admin API handler in-process.
type apiClient struct {
	h http.Handler
}

// call is one admin API request: method and path (with query) under /v1/,
// a JSON body if in is non-nil, the answer decoded into out if non-nil.
// token is the bearer secret. It returns the answer's headers.
func (c *apiClient) call(ctx context.Context, token, method, path string, in, out any) (http.Header, error) {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, path, &body)
	if err != nil {
		return nil, fmt.Errorf("api request %s %s: %w", method, path, err)
	}
	req.RemoteAddr = remoteAddr(ctx)
	req.Header.Set("Authorization", "Bearer "+token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := newRecorder()
	c.h.ServeHTTP(rec, req)
	if rec.code/100 != 2 {
		return rec.h, decodeAPIError(rec)
	}
	if out != nil {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return rec.h, fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return rec.h, nil
}

// decodeAPIError turns a non-2xx answer into an *APIError.
func decodeAPIError(rec *recorder) error {
	var e struct {
		Code   wire.ErrorCode  `json:"code"`
		Error  string          `json:"error"`
		Detail json.RawMessage `json:"detail"`
	}
	if err := json.Unmarshal(rec.body.Bytes(), &e); err != nil || e.Error == "" {
		e.Error = strings.TrimSpace(rec.body.String())
		if e.Error == "" {
			e.Error = http.StatusText(rec.code)
		}
	}
	return &APIError{Status: rec.code, Code: e.Code, Message: e.Error, Detail: e.Detail}
}

// statusOf returns the API status of err, or 0 if it is not an API error.
func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// recorder is the in-memory ResponseWriter the API writes into.
type recorder struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func newRecorder() *recorder { return &recorder{h: http.Header{}} }

func (r *recorder) Header() http.Header { return r.h }

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

// nextCursor returns the `after` parameter of the rel="next" URL in a
// Link header, or "" on the last page.
func nextCursor(h http.Header) string {
	for _, v := range h.Values("Link") {
		for link := range strings.SplitSeq(v, ",") {
			target, params, ok := strings.Cut(link, ";")
			if !ok || !strings.Contains(params, `rel="next"`) {
				continue
			}
			target = strings.Trim(strings.TrimSpace(target), "<>")
			if u, err := url.Parse(target); err == nil {
				return u.Query().Get("after")
			}
		}
	}
	return ""
}

// pagePath is path with the pagination parameters limit and after.
func pagePath(path string, limit int, after string) string {
	q := url.Values{}
	q.Set("limit", fmt.Sprint(limit))
	if after != "" {
		q.Set("after", after)
	}
	return path + "?" + q.Encode()
}

// listAll fetches every page of a paginated list into out.
func listAll[T any](ctx context.Context, c *apiClient, token, path string) ([]T, error) {
	var all []T
	after := ""
	for range 1000 { // at most a million items: a cursor that never ends is a bug
		var page []T
		h, err := c.call(ctx, token, http.MethodGet, pagePath(path, wire.MaxPageSize, after), nil, &page)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		next := nextCursor(h)
		if next == "" || next == after || len(page) == 0 {
			return all, nil
		}
		after = next
	}
	return nil, fmt.Errorf("list %s: too many pages", path)
}

type remoteAddrKey struct{}

// withRemoteAddr records the browser's address for the API requests made
// on its behalf.
func withRemoteAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteAddrKey{}, addr)
}

func remoteAddr(ctx context.Context) string {
	a, _ := ctx.Value(remoteAddrKey{}).(string)
	return a
}
