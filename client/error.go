package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/wiremesh/wiremesh/wire"
)

// Error is a non-2xx answer of the coordinator. Callers branch on Code
// (errors.As, or CodeOf), never on Message.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the answer's wire code; for an answer without one (a
	// coordinator from before codes, a proxy), the code its status implies,
	// or "" when it implies none.
	Code wire.ErrorCode
	// Message is the coordinator's message, for a person.
	Message string
	// Detail is the answer's detail, undecoded. Nil: none.
	Detail json.RawMessage
}

func (e *Error) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// CodeOf returns the code of the *Error in err's chain, or "" if there is
// none.
func CodeOf(err error) wire.ErrorCode {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// StatusOf returns the HTTP status of the *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// decodeError makes the *Error of a non-2xx answer with body raw.
func decodeError(status int, raw []byte) *Error {
	var body struct {
		Code   wire.ErrorCode  `json:"code"`
		Error  string          `json:"error"`
		Detail json.RawMessage `json:"detail"`
	}
	e := &Error{Status: status}
	if json.Unmarshal(raw, &body) == nil && body.Error != "" {
		e.Code, e.Message, e.Detail = body.Code, body.Error, body.Detail
	} else if e.Message = strings.TrimSpace(fmt.Sprintf("%.200s", raw)); e.Message == "" {
		e.Message = http.StatusText(status)
	}
	if e.Code == "" {
		e.Code = statusCodes[status]
	}
	return e
}

// statusCodes are the codes that an answer's status implies by itself.
var statusCodes = map[int]wire.ErrorCode{
	http.StatusUnauthorized:          wire.CodeUnauthorized,
	http.StatusNotFound:              wire.CodeNotFound,
	http.StatusConflict:              wire.CodeConflict,
	http.StatusRequestEntityTooLarge: wire.CodeTooLarge,
	http.StatusTooManyRequests:       wire.CodeRateLimited,
	http.StatusInternalServerError:   wire.CodeInternal,
	http.StatusServiceUnavailable:    wire.CodeUnavailable,
}

// errorFrom reads the *Error of a non-2xx answer from resp's body (at most
// 64 KiB of it). It does not close the body.
func errorFrom(resp *http.Response) *Error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return decodeError(resp.StatusCode, raw)
}
