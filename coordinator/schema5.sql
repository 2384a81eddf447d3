-- Migration 5: node lifetimes (issue 6). A join key may give the nodes it
-- admits an expiry (node_expiry, ms after enrollment; 0 = none) and make
-- them ephemeral: deleted once offline for the coordinator's ephemeral
-- timeout. nodes.expired records that the coordinator has published a
-- node's expiry (every expiry set before this migration was "now").
ALTER TABLE join_keys ADD COLUMN node_expiry INTEGER NOT NULL DEFAULT 0;
ALTER TABLE join_keys ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN expired INTEGER NOT NULL DEFAULT 0;
UPDATE nodes SET expired = 1 WHERE expires != 0;
