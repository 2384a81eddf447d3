-- Migration 8: incremental netmaps (issue 14). nodes.changed is the state
-- version of the node's last change that netmaps carry (0: before this
-- migration), and node_deletions the version at which each deleted node
-- went, so that a coordinator reads only what changed since the version
-- it has (StateSince).
ALTER TABLE nodes ADD COLUMN changed {{int}} NOT NULL DEFAULT 0;
CREATE INDEX nodes_changed ON nodes(changed);
CREATE TABLE node_deletions (
	id {{int}} NOT NULL,
	version {{int}} NOT NULL
);
CREATE INDEX node_deletions_version ON node_deletions(version);
-- StateSince reads the next expiry with every change.
CREATE INDEX nodes_expires ON nodes(expires);
