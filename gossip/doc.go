// Package gossip is the agent's serf member behind a small adapter: every
// agent runs one Member, bound to its overlay IPv4 address (port 7946 by
// default), and learns from it which nodes are alive, the health of their
// services, and how far away they are.
//
// Liveness is serf's (memberlist's SWIM with Lifeguard): members probe
// each other over UDP, with indirect and TCP fallback probes, and a
// member that stops answering is suspected, then Failed when it has not
// refuted in time. The defaults are tuned for fast failover on a
// sub-millisecond overlay: a killed agent is Failed at every other member
// in about 2 s (probe every 400 ms, 200 ms timeout, suspicion of
// 2 × max(1, log10(members)) probe intervals). A member that Closes
// leaves gracefully and is Left. A failed agent that restarts with the
// same name and address and Joins its peers is Alive again at once.
//
// Service health travels in serf member tags, in one tag "svc" whose
// value lists the node's services sorted by name as NAME=S, comma
// separated, S being p (passing), w (warning) or c (critical):
// "api=w,db=c,web=p". Names are DNS labels (a-z, 0-9, '-'). Serf caps a
// member's encoded tags at 512 bytes, so SetHealth refuses more. A
// malformed tag from a peer is ignored (that member shows no health) and
// logged at debug level.
//
// Gossip is always encrypted (AES-GCM) with a keyring: the first key
// encrypts, every key decrypts. SetKeys replaces a member's ring; the
// mesh rotates by adding the new key everywhere, making it primary
// everywhere, then removing the old one.
//
// Serf's Vivaldi network coordinates, updated with every probe, give an
// RTT estimate to each member; the snapshot refreshes them every 2 s.
//
// One goroutine per Member owns serf's event channel and turns member
// events into an immutable snapshot, read with Members and announced on
// Changes. Stats counts the bytes and packets of the member's transport.
package gossip
