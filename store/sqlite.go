package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

const sqliteName = "sqlite"

// sqlite is the dialect of SQLite: ? placeholders, INTEGER for every
// integer and boolean, the schema version in PRAGMA user_version.
var sqlite = &dialect{
	name:     sqliteName,
	types:    strings.NewReplacer("{{id}}", "INTEGER PRIMARY KEY AUTOINCREMENT", "{{int}}", "INTEGER", "{{bool}}", "INTEGER", "{{true}}", "1", "{{false}}", "0"),
	snapshot: sql.TxOptions{ReadOnly: true},
	schemaVersion: func(ctx context.Context, c conn) (v int, err error) {
		err = c.row(ctx, "PRAGMA user_version").Scan(&v)
		return v, err
	},
	setSchemaVersion: func(ctx context.Context, tx conn, v int) error {
		_, err := tx.exec(ctx, "PRAGMA user_version = "+strconv.Itoa(v))
		return err
	},
	// One coordinator opens a SQLite file: its data dir is locked.
	lock: func(context.Context, *sql.Conn) (func() error, error) { return func() error { return nil }, nil },
}

// openSQLite opens (creating if needed) the SQLite database cfg.Path.
func openSQLite(ctx context.Context, cfg Config) (*DB, error) {
	path := cfg.Path
	// The database holds the gossip keyring: it and SQLite's -wal and -shm
	// files (made with the database's mode) are 0600 whatever the umask.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	f.Close()
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// One connection: SQLite serialises writers anyway, and this keeps
	// every transaction's view simple.
	db.SetMaxOpenConns(1)
	s := &DB{db: db, d: sqlite, now: time.Now}
	if err := s.setup(ctx, cfg.Prefix4, cfg.Prefix6); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			db.Close()
			return nil, fmt.Errorf("database: %w", err)
		}
	}
	return s, nil
}
