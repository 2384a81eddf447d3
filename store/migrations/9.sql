-- Migration 9: web UI login sessions in the database, so that every
-- coordinator serving the UI knows them (issue 14). hash: the SHA-256 of
-- the session id (the browser's cookie), which is never stored; token_id:
-- the admin token the session logged in with; sealed: that token's secret
-- and the session's CSRF token, sealed under a key derived from the
-- session id (see store/sessions.go); expires: ms; flash: a message for
-- the session's next page.
CREATE TABLE ui_sessions (
	hash TEXT PRIMARY KEY,
	token_id TEXT NOT NULL,
	sealed TEXT NOT NULL,
	expires {{int}} NOT NULL,
	flash TEXT NOT NULL DEFAULT ''
);
CREATE INDEX ui_sessions_expires ON ui_sessions(expires);
CREATE INDEX ui_sessions_token ON ui_sessions(token_id);
