package store

import (
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/wiremesh/wiremesh/wire"
)

// Errors a caller of the store branches on. They are wrapped with detail.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrDenied   = errors.New("denied")
	ErrInvalid  = errors.New("invalid")
	// ErrForbidden: the caller is known but may not do this (403), such
	// as a relay join key enrolling an agent.
	ErrForbidden = errors.New("forbidden")
	// ErrUnavailable: the database cannot be reached (a PostgreSQL server
	// that does not answer or refuses the login).
	ErrUnavailable = errors.New("database unavailable")
)

// codedError gives a store error a wire code finer than its sentinel's
// (ErrDenied: unauthorized; a revoked join key: revoked). It keeps the
// message and the sentinel of the error it wraps.
type codedError struct {
	code wire.ErrorCode
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// withCode wraps err with code.
func withCode(code wire.ErrorCode, err error) error { return &codedError{code: code, err: err} }

// Code returns the wire code a store error carries beyond its sentinel
// (wire.CodeExpired, wire.CodeRevoked, wire.CodeKeyUsed), if any.
func Code(err error) (wire.ErrorCode, bool) {
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code, true
	}
	return "", false
}

// Unavailable reports whether err means that the database could not be
// reached or lost the connection (PostgreSQL restarting, the network
// between them down): the same request may succeed once it is back.
func Unavailable(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	var ne net.Error
	switch {
	case errors.Is(err, ErrUnavailable), errors.Is(err, driver.ErrBadConn), errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.As(err, &ce), errors.As(err, &ne):
		return true
	case errors.As(err, &pe):
		// Class 08: connection exceptions; 57P: the server shutting
		// down or starting.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P")
	}
	return false
}
