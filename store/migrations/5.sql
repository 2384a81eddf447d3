-- Migration 5: node lifetimes (issue 6). A join key may give the nodes it
-- admits an expiry (node_expiry, ms after enrollment; 0 = none) and make
-- them ephemeral: deleted once offline for the coordinator's ephemeral
-- timeout. nodes.expired records that the coordinator has published a
-- node's expiry (every expiry set before this migration was "now").
ALTER TABLE join_keys ADD COLUMN node_expiry {{int}} NOT NULL DEFAULT 0;
ALTER TABLE join_keys ADD COLUMN ephemeral {{bool}} NOT NULL DEFAULT {{false}};
ALTER TABLE nodes ADD COLUMN ephemeral {{bool}} NOT NULL DEFAULT {{false}};
ALTER TABLE nodes ADD COLUMN expired {{bool}} NOT NULL DEFAULT {{false}};
UPDATE nodes SET expired = {{true}} WHERE expires != 0;
