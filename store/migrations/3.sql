-- Migration 3: the service catalog and the gossip keyring.
-- services: the node's []wire.Service definitions (JSON, without health);
-- changing them bumps the state version. health: the last reported
-- health, {"SERVICE": {"health": ..., "checks": [...]}} (JSON); it is
-- written without bumping the version, since health reaches agents by
-- gossip, not in netmaps.
ALTER TABLE nodes ADD COLUMN services TEXT NOT NULL DEFAULT '[]';
ALTER TABLE nodes ADD COLUMN health TEXT NOT NULL DEFAULT '{}';
CREATE TABLE gossip_keys (
	id         {{id}},
	key        TEXT NOT NULL, -- base64 AES-256 key
	created    {{int}} NOT NULL,
	is_primary {{bool}} NOT NULL DEFAULT {{false}}
);
