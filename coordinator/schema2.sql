-- Migration 2: access policies. The active policy is the newest version.
CREATE TABLE policies (
	version INTEGER PRIMARY KEY AUTOINCREMENT,
	text    TEXT NOT NULL,
	author  TEXT NOT NULL,
	created INTEGER NOT NULL,
	comment TEXT NOT NULL DEFAULT ''
);
