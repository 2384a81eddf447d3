-- Migration 1: the initial schema. Times are unix milliseconds; 0 = unset.
CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE nodes (
	id          {{id}},
	name        TEXT NOT NULL UNIQUE,
	public_key  TEXT NOT NULL UNIQUE,
	host_index  {{int}} NOT NULL UNIQUE,
	cred_id     TEXT NOT NULL UNIQUE,
	cred_hash   TEXT NOT NULL,
	tags        TEXT NOT NULL DEFAULT '[]',
	endpoints   TEXT NOT NULL DEFAULT '[]',
	join_key_id TEXT NOT NULL DEFAULT '',
	created     {{int}} NOT NULL,
	last_seen   {{int}} NOT NULL DEFAULT 0
);
CREATE TABLE join_keys (
	id       TEXT PRIMARY KEY,
	hash     TEXT NOT NULL,
	reusable {{bool}} NOT NULL,
	tags     TEXT NOT NULL DEFAULT '[]',
	created  {{int}} NOT NULL,
	expires  {{int}} NOT NULL DEFAULT 0,
	revoked  {{int}} NOT NULL DEFAULT 0,
	uses     {{int}} NOT NULL DEFAULT 0
);
CREATE TABLE admin_tokens (
	id      TEXT PRIMARY KEY,
	hash    TEXT NOT NULL,
	created {{int}} NOT NULL,
	revoked {{int}} NOT NULL DEFAULT 0
);
CREATE TABLE audit (
	id     {{id}},
	time   {{int}} NOT NULL,
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	target TEXT NOT NULL,
	detail TEXT NOT NULL DEFAULT ''
);
