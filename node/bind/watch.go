package bind

import (
	"bufio"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// WatchInterval is how often a Watch compares what arrives with what
// decrypts: a one-way session is repaired within watchMinLag and two of
// them of the first packet that did not decrypt.
const WatchInterval = 250 * time.Millisecond

// watchMinLag is the least time the device has to decrypt a peer's data
// packets before the Watch takes a standing receive counter for a broken
// session: on a loaded host (a CPU burner, the race detector) packets
// wait in wireguard-go's queues for longer than a check interval, and a
// session that worked was repaired (TestWatchRepairsOneWaySession, with
// 50 ms checks, in a CI proof run).
const watchMinLag = time.Second

// watchRepairGap is the least time between two repairs of one peer, so a
// peer (or a spoofer at its address) sending what never decrypts costs at
// most one handshake per gap.
const watchRepairGap = 2 * time.Second

// A Watch repairs WireGuard sessions that carry traffic one way only.
//
// wireguard-go handles handshake messages on several workers at once. When
// two peers initiate at the same moment (as two peers that learn of each
// other from one netmap do) and one of them handles the other's initiation
// while it is finishing the other's response to its own, the response can
// complete after the initiation's answer replaced the handshake's index:
// the session made is current but no index leads to it, so everything the
// other peer sends on it is dropped, while what this side sends arrives.
// wireguard-go repairs that only after hearing nothing for 15 s.
//
// The Watch sees the symptom: data packets from a peer arrive at the Bind
// while the device's receive counter for the peer stands still. It then
// discards the peer's sessions and starts a handshake, which gives both
// sides a fresh pair.
type Watch struct {
	b     *Bind
	dev   *device.Device
	log   *slog.Logger
	peers map[[32]byte]*watched
	// total is the sum of the peers' data packet counts at the last
	// check, quiet how many checks in a row saw it unchanged.
	total uint64
	quiet int
}

// watched is what the Watch knows of one peer: its counts at the last
// check (the Bind's data packets, the device's receive bytes) and since
// when data packets have arrived without the receive counter moving.
type watched struct {
	data       uint64
	rx         int64
	stuckSince time.Time // zero: every packet so far was followed by a decrypt
	lastRepair time.Time
}

// NewWatch returns a Watch of dev's sessions over b; the caller runs
// Check every WatchInterval.
func NewWatch(b *Bind, dev *device.Device, log *slog.Logger) *Watch {
	return &Watch{b: b, dev: dev, log: log, peers: map[[32]byte]*watched{}}
}

// Check takes a sample and repairs the peers whose data packets arrived
// at the Bind while the device's receive counter has stood still since,
// for at least watchMinLag: the device had time to decrypt them. It reads the device only while packets arrive: after two checks
// without any, every packet has been judged.
func (w *Watch) Check(now time.Time) {
	peers := w.b.peerList()
	var total uint64
	for _, p := range peers {
		total += p.dataIn.Load()
	}
	if total == w.total {
		w.quiet++
	} else {
		w.total, w.quiet = total, 0
	}
	if w.quiet > 2 {
		return
	}
	rx, err := deviceRx(w.dev)
	if err != nil {
		w.log.Warn("watch: read the device", "err", err)
		return
	}
	seen := make(map[[32]byte]bool, len(peers))
	for _, p := range peers {
		seen[p.key] = true
		r, ok := rx[p.key]
		if !ok {
			delete(w.peers, p.key)
			continue
		}
		// A peer new to the device and the Bind (both follow the netmap)
		// starts from nothing received: the first packets, which a
		// session that is broken from the start drops, count.
		st := w.peers[p.key]
		if st == nil {
			st = &watched{}
			w.peers[p.key] = st
		}
		data := p.dataIn.Load()
		switch {
		case r != st.rx:
			st.stuckSince = time.Time{}
		case data != st.data && st.stuckSince.IsZero():
			st.stuckSince = now
		}
		st.data, st.rx = data, r
		if !st.stuckSince.IsZero() && now.Sub(st.stuckSince) >= watchMinLag && now.Sub(st.lastRepair) >= watchRepairGap {
			w.repair(p.key)
			st.stuckSince, st.lastRepair = time.Time{}, now
		}
	}
	for k := range w.peers {
		if !seen[k] {
			delete(w.peers, k)
		}
	}
}

func (w *Watch) repair(key [32]byte) {
	p := w.dev.LookupPeer(device.NoisePublicKey(key))
	if p == nil {
		return
	}
	w.b.stats.sessionRepairs.Add(1)
	w.log.Info("packets from peer do not decrypt; starting a new handshake", "peer", hex.EncodeToString(key[:4]))
	p.ExpireCurrentKeypairs()
	p.SendKeepalive()
}

// deviceRx reads each peer's receive byte counter from the device.
func deviceRx(dev *device.Device) (map[[32]byte]int64, error) {
	s, err := dev.IpcGet()
	if err != nil {
		return nil, err
	}
	out := map[[32]byte]int64{}
	var key [32]byte
	have := false
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			raw, err := hex.DecodeString(v)
			have = err == nil && len(raw) == 32
			if have {
				key = [32]byte(raw)
			}
		case "rx_bytes":
			if have {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[key] = n
			}
		}
	}
	return out, nil
}
