-- Migration 10: the time of each node's newest accepted report proof, by
-- kind ("services", "connectivity"), in nanoseconds, so that every
-- coordinator refuses a report whose proof is not newer than one any of
-- them accepted: a replayed report (AcceptProof). A node's rows go with it.
CREATE TABLE proof_times (
	node_id {{int}} NOT NULL,
	kind TEXT NOT NULL,
	at {{int}} NOT NULL,
	PRIMARY KEY (node_id, kind)
);
