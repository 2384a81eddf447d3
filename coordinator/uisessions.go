package coordinator

import (
	"context"
	"errors"

	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/ui"
)

// uiSessions keeps the web UI's login sessions in the store, so that
// every coordinator on the database knows them (see store.Session for
// what the database holds of them).
type uiSessions struct{ s store.Store }

var _ ui.Sessions = uiSessions{}

func (u uiSessions) CreateSession(ctx context.Context, s ui.Session, limit int) (string, error) {
	return u.s.CreateSession(ctx, store.Session(s), limit)
}

func (u uiSessions) Session(ctx context.Context, id string) (ui.Session, error) {
	s, err := u.s.Session(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return ui.Session{}, ui.ErrNoSession
	}
	return ui.Session(s), err
}

func (u uiSessions) SetSessionFlash(ctx context.Context, id, msg string) error {
	return u.s.SetSessionFlash(ctx, id, msg)
}

func (u uiSessions) TakeSessionFlash(ctx context.Context, id, msg string) (bool, error) {
	return u.s.TakeSessionFlash(ctx, id, msg)
}

func (u uiSessions) DeleteSession(ctx context.Context, id string) error {
	return u.s.DeleteSession(ctx, id)
}
