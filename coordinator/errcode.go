package coordinator

import "github.com/wiremesh/wiremesh/wire"

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
