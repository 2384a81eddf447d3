package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"strconv"
)

// migrationFiles are the schema's history, migrations/1.sql onwards, in
// the words of both engines: {{id}} is a table's auto-increment key,
// {{int}} a 64-bit integer, {{bool}} a boolean and {{true}} and {{false}}
// its values (see each dialect's types).
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations are the migrations' texts, in order, before rendering.
var migrations = func() []string {
	var out []string
	for i := 1; ; i++ {
		b, err := migrationFiles.ReadFile("migrations/" + strconv.Itoa(i) + ".sql")
		if err != nil {
			return out
		}
		out = append(out, string(b))
	}
}()

// migrate applies the migrations c's database lacks, up to the first
// upTo, each in its own transaction with the record of its number.
func migrate(ctx context.Context, c *sql.Conn, d *dialect, upTo int) error {
	v, err := d.schemaVersion(ctx, conn{d, c})
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this binary knows (%d)", v, len(migrations))
	}
	for ; v < upTo; v++ {
		if err := migrateOne(ctx, c, d, v+1); err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
	}
	return nil
}

// migrateOne applies migration n.
func migrateOne(ctx context.Context, c *sql.Conn, d *dialect, n int) error {
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, d.types.Replace(migrations[n-1])); err != nil {
		return err
	}
	if err := d.setSchemaVersion(ctx, conn{d, tx}, n); err != nil {
		return err
	}
	return tx.Commit()
}
