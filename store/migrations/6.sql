-- Migration 6: standalone relays (issue 13). A relay join key enrolls
-- relays only, and other keys no relay. A relay node keeps its own
-- description (a JSON wire.Relay) in nodes.relay; NULL for an agent.
ALTER TABLE join_keys ADD COLUMN relay {{bool}} NOT NULL DEFAULT {{false}};
ALTER TABLE nodes ADD COLUMN relay TEXT;
