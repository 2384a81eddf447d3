// Package store keeps a coordinator's state: nodes and their addresses,
// join keys, admin tokens, policies, the service catalog, the gossip
// keyring and the audit log.
//
// Store is the interface the coordinator depends on. DB implements it on
// either of two engines: SQLite (modernc.org/sqlite, a file, the default:
// nothing to set up) or PostgreSQL (github.com/jackc/pgx/v5 through its
// database/sql driver). Both run the same code: DB is written against
// database/sql once, with ? placeholders, and a small dialect supplies
// what differs — numbered placeholders, the column types of the
// migrations, how the schema version is kept, the lock that migrations
// run under, and the isolation of snapshot reads.
//
// The two engines keep one migration history: migrations/N.sql, applied
// in order, with {{id}}, {{int}}, {{bool}}, {{true}} and {{false}} where
// the engines' SQL must differ. SQLite counts the migrations done in
// PRAGMA user_version, as it always has; PostgreSQL in the table
// schema_version, and migrates under an advisory lock, so that several
// coordinators starting at once migrate once.
//
// Every change is one transaction, and each one that netmaps depend on
// bumps the state version (settings row "version") as its first
// statement. On PostgreSQL that row's lock makes writers take turns, as
// SQLite's BEGIN IMMEDIATE does, so that every check a change makes (a
// one-time join key's uses, a free name, a free address) sees every
// change committed before it, on any coordinator.
//
// Cached wraps a Store and keeps the admin listing in memory.
package store
