package store

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyChannel is the PostgreSQL channel on which every committed change
// is announced. Its payload is the new state version, never data:
// listeners read the state themselves.
const notifyChannel = "wiremesh_changed"

// DefaultPollInterval is how often a listener reads the state version
// even when no announcement came: a lost one delays a change by at most
// this much.
const DefaultPollInterval = 2 * time.Second

// Listen calls changed with the state version whenever another process
// sharing the database may have committed a change: when an announcement
// arrives, once it is listening (so whatever was announced while it was
// not is read), and every poll. The version is Committed when changed
// runs. changed may run on two goroutines at once. Listen returns when
// ctx is done (nil) or the listening connection fails (the error; call
// it again). On SQLite, which one process owns, it waits for ctx.
//
// The listener holds one connection of its own for as long as it runs:
// behind pgbouncer, it must use session pooling.
func (s *DB) Listen(ctx context.Context, poll time.Duration, changed func(version uint64)) (err error) {
	if s.pg == nil {
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		if err != nil {
			// The server went away (a restart, the network): the pool's
			// idle connections went with it. Closing them now saves the
			// next requests from failing on them.
			s.db.SetMaxIdleConns(0)
			s.db.SetMaxIdleConns(maxPostgresConns)
		}
	}()
	c, err := pgx.ConnectConfig(ctx, s.pg)
	if err != nil {
		return fmt.Errorf("listen: connect: %w", err)
	}
	defer func() {
		cctx, stop := context.WithTimeout(context.Background(), time.Second)
		defer stop()
		c.Close(cctx)
	}()
	if _, err := c.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if err := s.observe(ctx, changed); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	polls := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		t := time.NewTicker(poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.observe(ctx, changed); err != nil && ctx.Err() == nil {
				polls <- err
				cancel()
				return
			}
		}
	})
	for {
		n, err := c.WaitForNotification(ctx)
		switch {
		case err == nil:
		case len(polls) > 0:
			return fmt.Errorf("listen: poll: %w", <-polls)
		case ctx.Err() != nil:
			return nil
		default:
			return fmt.Errorf("listen: %w", err)
		}
		v, err := strconv.ParseUint(n.Payload, 10, 64)
		if err != nil {
			continue // not an announcement of ours
		}
		s.raise(v)
		changed(v)
	}
}

// Sync reads the state version and makes it Committed, so that a reload
// after it sees every change committed before, through any process.
func (s *DB) Sync(ctx context.Context) (uint64, error) {
	v, err := s.Version(ctx)
	if err != nil {
		return 0, err
	}
	s.raise(v)
	return v, nil
}

// observe syncs and passes the version to changed.
func (s *DB) observe(ctx context.Context, changed func(uint64)) error {
	v, err := s.Sync(ctx)
	if err != nil {
		return err
	}
	changed(v)
	return nil
}
