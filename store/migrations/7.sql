-- Migration 7: several coordinators on one database (issue 14).
-- coordinators: each coordinator that serves this mesh, by its first
-- advertised URL: all its URLs and its embedded relay (JSON), and when it
-- last said it was up (ms). leases: timed work that one coordinator does
-- for all, held by holder until until (ms). nodes.online_until: a
-- coordinator that holds the node's netmap stream renews it (ms; 0:
-- offline), so that the others see the node online too.
CREATE TABLE coordinators (
	url TEXT PRIMARY KEY,
	info TEXT NOT NULL,
	seen {{int}} NOT NULL
);
CREATE TABLE leases (
	name TEXT PRIMARY KEY,
	holder TEXT NOT NULL,
	until {{int}} NOT NULL
);
ALTER TABLE nodes ADD COLUMN online_until {{int}} NOT NULL DEFAULT 0;
