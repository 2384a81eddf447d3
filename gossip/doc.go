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
// Health changes spread by memberlist's gossip: each member forwards a
// change 12 × ceil(log10(members+1)) times to random members (memberlist's
// default of 4 lost updates in bursts), so a burst of changes reaches
// every member within about half a second (docs/benchmarks.md); every 30 s
// each member also exchanges its full state with a random one, which
// heals partitions. memberlist is built from third_party/memberlist, whose
// broadcast queue no longer drops a member's own update (see
// DefaultPushPullInterval).
//
// Gossip is always encrypted (AES-GCM) with a keyring: the first key
// encrypts, every key decrypts. The member's transport encrypts, in
// memberlist's own format, and memberlist has no keyring, so serf's key
// queries, which any member holding the key may send, find nothing to
// change and are refused: only SetKeys changes the ring. The mesh rotates
// by adding the new key everywhere, making it primary everywhere, then
// removing the old one. Serf's name-conflict votes are off.
//
// Serf's Vivaldi network coordinates, updated with every probe, give an
// RTT estimate to each member; the snapshot refreshes them every 2 s.
//
// One goroutine per Member owns serf's event channel and turns member
// events into an immutable snapshot, read with Members and announced on
// Changes. Stats counts the bytes and packets of the member's transport.
package gossip
