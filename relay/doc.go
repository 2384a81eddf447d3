// Package relay is wiremesh's blind packet relay: a node that cannot
// reach a peer directly sends its WireGuard packets to the relay over TLS
// on TCP, addressed by the peer's node public key, and the relay writes
// them to the connection of the node that holds that key.
//
// The relay runs as an http.Handler (Server) on wire.PathRelay: the
// coordinator embeds one in its HTTPS server, `wiremesh relay` runs one on
// its own. A node (Client) upgrades a GET to the protocol
// "wiremesh-relay/1" and then speaks frames: a type byte, a 4-byte
// big-endian payload length, the payload (at most 64 KiB + 32 bytes).
//
//	relay → node  challenge  relay proof public key (32) ‖ nonce (32)
//	node → relay  auth       node public key (32) ‖ MAC (32), see credential.RelayProof
//	relay → node  ok         (empty): attached
//	relay → node  error      reason text; the relay closes the connection next
//	node → relay  send       destination key (32) ‖ packet
//	relay → node  recv       source key (32) ‖ packet
//	either way    ping/pong  8 bytes, echoed
//	relay → node  keep-alive (empty), every 30 s
//	relay → node  peer-gone  key (32): a send's destination is not attached
//
// Only a node that proves it holds the private key of an enrolled node
// key attaches; one connection per key (a newer one replaces the older);
// a node receives only packets addressed to its own key. A malformed
// frame closes the connection, with its reason logged.
//
// What the relay sees and what it cannot do: it sees which node keys
// talk to which, the sizes and timing of their packets, and the nodes'
// addresses. It never sees plaintext, since WireGuard encrypts end to
// end between the two nodes, and it cannot forge or alter a packet that a
// peer would accept: WireGuard authenticates every packet with the
// session keys of the two peers. A hostile relay can drop, delay,
// reorder or replay packets (WireGuard drops replays and tampered
// packets), which is no more than an attacker on the network can do. The
// source key on a delivered packet is only the relay's word; the peer's
// WireGuard decides by its own handshake who sent it.
package relay
