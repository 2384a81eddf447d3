package ui

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/wiremesh/wiremesh/client"
)

// apiClient calls the admin API handler in-process, through the client
// package (the one client of the coordinator's API). Its errors are
// *client.Error.
type apiClient struct{ api *client.Client }

// newAPIClient calls h; each request carries the browser's address
// (withRemoteAddr) as its RemoteAddr.
func newAPIClient(h http.Handler) *apiClient {
	api, err := client.New(client.Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.RemoteAddr = remoteAddr(r.Context())
		h.ServeHTTP(w, r)
	})})
	if err != nil {
		panic(err) // a config with a handler is always valid
	}
	return &apiClient{api: api}
}

// call is one admin API request: method and path (with query) under /v1/,
// a JSON body if in is non-nil, the answer decoded into out if non-nil.
// token is the bearer secret. It returns the answer's headers.
func (c *apiClient) call(ctx context.Context, token, method, path string, in, out any) (http.Header, error) {
	return c.api.WithToken(token).Do(ctx, method, path, in, out)
}

// statusOf returns the API status of err, or 0 if it is not an API error.
func statusOf(err error) int { return client.StatusOf(err) }

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

// listAll fetches every page of a paginated list.
func listAll[T any](ctx context.Context, c *apiClient, token, path string) ([]T, error) {
	return client.List[T](ctx, c.api.WithToken(token), path)
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
