-- Migration 2: access policies. The active policy is the newest version.
CREATE TABLE policies (
	version {{id}},
	text    TEXT NOT NULL,
	author  TEXT NOT NULL,
	created {{int}} NOT NULL,
	comment TEXT NOT NULL DEFAULT ''
);
