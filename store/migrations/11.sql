-- Migration 11: what each node last reported about how it reaches the
-- mesh (wire.Connectivity as JSON; '' before its first report), so that
-- every coordinator shows it to admins, not only the one the node
-- reported to (SetConnectivity). Writing it makes no new version.
ALTER TABLE nodes ADD COLUMN connectivity TEXT NOT NULL DEFAULT '';
