package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// DB is a Store on a SQL database, SQLite or PostgreSQL: one code path
// over database/sql, with a dialect for what the engines do differently.
// Make one with Open.
type DB struct {
	db       *sql.DB
	d        *dialect
	prefixes [2]netip.Prefix // IPv4 and IPv6 overlay prefixes, fixed at creation
	now      func() time.Time
	// pg is the PostgreSQL connection config, for Listen; nil on SQLite.
	pg *pgx.ConnConfig
	// committed is the newest state version a transaction of this DB
	// committed.
	committed atomic.Uint64
}

var _ Store = (*DB)(nil)

// Config says which database Open opens.
type Config struct {
	// Path is the SQLite database file, created (0600) if missing; it is
	// used when URL is empty.
	Path string
	// URL is a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DB
	// (postgresql:// too; pgx's parameters, such as sslmode, in its
	// query). Empty: SQLite at Path.
	URL string
	// Prefix4 and Prefix6 are the overlay prefixes. They are recorded on
	// creation, and a database created with other prefixes is refused.
	// Zero: what the database has, or DefaultPrefix4 and DefaultPrefix6
	// for a new one.
	Prefix4, Prefix6 netip.Prefix
}

// Open opens the database cfg names, creating its schema or bringing it
// up to date.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.URL != "" {
		return openPostgres(ctx, cfg)
	}
	return openSQLite(ctx, cfg)
}

// setup brings the schema up to date and records the first settings of a
// new database, holding the dialect's setup lock.
func (s *DB) setup(ctx context.Context, p4, p6 netip.Prefix) (err error) {
	c, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	unlock, err := s.d.lock(ctx, c)
	if err != nil {
		return err
	}
	defer func() {
		if uerr := unlock(); err == nil {
			err = uerr
		}
	}()
	if err := migrate(ctx, c, s.d, len(migrations)); err != nil {
		return err
	}
	q := conn{s.d, c}
	if err := s.initPrefixes(ctx, q, p4, p6); err != nil {
		return err
	}
	return s.initGossipKey(ctx, q)
}

// Close closes the database.
func (s *DB) Close() error { return s.db.Close() }

// Prefixes returns the IPv4 and IPv6 overlay prefixes.
func (s *DB) Prefixes() []netip.Prefix { return s.prefixes[:] }

// Committed returns the newest state version a change made through s
// committed.
func (s *DB) Committed() uint64 { return s.committed.Load() }

// CheckIntegrity runs SQLite's integrity check. On PostgreSQL, which
// checks its own pages, it does nothing.
func (s *DB) CheckIntegrity(ctx context.Context) error {
	if s.d.name != sqliteName {
		return nil
	}
	var res string
	if err := s.db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	if res != "ok" {
		return fmt.Errorf("integrity check: %s", res)
	}
	return nil
}

// conn runs queries written with ? placeholders, in the dialect d, on the
// database, a connection or a transaction.
type conn struct {
	d *dialect
	x interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
}

func (c conn) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return c.x.ExecContext(ctx, c.d.rebind(query), args...)
}

func (c conn) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return c.x.QueryContext(ctx, c.d.rebind(query), args...)
}

func (c conn) row(ctx context.Context, query string, args ...any) *sql.Row {
	return c.x.QueryRowContext(ctx, c.d.rebind(query), args...)
}

// q runs queries on the database, outside any transaction.
func (s *DB) q() conn { return conn{s.d, s.db} }

// bumpVersion adds one to the state version and returns the new one.
const bumpVersion = `INSERT INTO settings(key, value) VALUES('version', '1')
	ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(settings.value AS BIGINT) + 1 AS TEXT)
	RETURNING CAST(value AS BIGINT)`

// tx runs fn in one transaction that first bumps the state version; it
// returns the new version. Bumping first takes the version row's lock on
// PostgreSQL (SQLite's transactions are BEGIN IMMEDIATE), so writers take
// turns and fn sees every change committed before it.
func (s *DB) tx(ctx context.Context, fn func(conn) error) (uint64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	q := conn{s.d, tx}
	var v uint64
	if err := q.row(ctx, bumpVersion).Scan(&v); err != nil {
		return 0, fmt.Errorf("bump version: %w", err)
	}
	if err := fn(q); err != nil {
		return 0, err
	}
	if s.d.notify != "" {
		// Delivered at commit, to every coordinator listening (Listen).
		if _, err := q.exec(ctx, s.d.notify, strconv.FormatUint(v, 10)); err != nil {
			return 0, fmt.Errorf("announce version: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	s.raise(v)
	return v, nil
}

// raise makes v the committed version, unless a newer one is.
func (s *DB) raise(v uint64) {
	for c := s.committed.Load(); c < v && !s.committed.CompareAndSwap(c, v); c = s.committed.Load() {
	}
}

// snapshot runs fn in a read-only transaction that sees one state of the
// database throughout.
func (s *DB) snapshot(ctx context.Context, fn func(conn) error) error {
	tx, err := s.db.BeginTx(ctx, &s.d.snapshot)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	return fn(conn{s.d, tx})
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
