package store

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"sync"
)

// A dialect is what one engine does differently; the queries are the
// same.
type dialect struct {
	name string
	// numbered: placeholders are $1, $2, … instead of ?.
	numbered bool
	rebound  sync.Map // query with ? → the same with $N
	// types renders a migration's {{id}}, {{int}}, {{bool}}, {{true}} and
	// {{false}}.
	types *strings.Replacer
	// snapshot starts a transaction that reads one state throughout.
	snapshot sql.TxOptions
	// schemaVersion returns the number of migrations applied.
	schemaVersion func(ctx context.Context, c conn) (int, error)
	// setSchemaVersion records, inside migration v's transaction, that
	// v migrations are applied.
	setSchemaVersion func(ctx context.Context, tx conn, v int) error
	// notify, with the new state version as its argument, announces a
	// change in the transaction that makes it; "": no other process can
	// share the database.
	notify string
	// lock takes the lock under which a store is set up (migrated, its
	// first settings written) on c; unlock releases it.
	lock func(ctx context.Context, c *sql.Conn) (unlock func() error, err error)
}

// rebind returns query, written with ? placeholders, in d's placeholders.
// A ? inside a quoted string stays.
func (d *dialect) rebind(query string) string {
	if !d.numbered {
		return query
	}
	if r, ok := d.rebound.Load(query); ok {
		return r.(string)
	}
	var b strings.Builder
	n, quoted := 0, false
	for i := 0; i < len(query); i++ {
		switch c := query[i]; {
		case c == '\'':
			quoted = !quoted
		case c == '?' && !quoted:
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	d.rebound.Store(query, b.String())
	return b.String()
}
