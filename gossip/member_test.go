package gossip

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestJoinAndHealth(t *testing.T) {
	ms, _ := cluster(t, 3)
	for _, m := range ms {
		got := m.Members()
		if len(got) != 3 {
			t.Fatalf("%s sees %d members, want 3", m.name, len(got))
		}
		for i, mi := range got {
			if want := fmt.Sprintf("m%d", i); mi.Name != want || mi.Status != Alive || mi.Health != nil {
				t.Errorf("%s: member %d = %+v; want %s alive without health", m.name, i, mi, want)
			}
		}
	}
	// Drain the join news, so the next value is about health.
	for _, m := range ms {
		select {
		case <-m.Changes():
		default:
		}
	}

	want := map[string]Health{"web": Passing, "api": Warning, "db": Critical}
	if err := ms[0].SetHealth(want); err != nil {
		t.Fatalf("SetHealth: %v", err)
	}
	for _, m := range ms {
		waitFor(t, 5*time.Second, m.name+" sees m0's health", func() bool {
			mi, _ := info(m, "m0")
			return maps.Equal(mi.Health, want)
		})
	}
	select {
	case <-ms[1].Changes():
	default:
		t.Error("m1: no value on Changes after m0's health changed")
	}

	big := map[string]Health{}
	for i := range 60 {
		big[fmt.Sprintf("service-number-%02d", i)] = Passing
	}
	if err := ms[0].SetHealth(big); !errors.Is(err, ErrTagsTooLarge) {
		t.Errorf("SetHealth(60 services) = %v; want ErrTagsTooLarge", err)
	}
	if err := ms[0].SetHealth(map[string]Health{"Bad_Name": Passing}); err == nil {
		t.Error("SetHealth(bad name) succeeded")
	}
	if mi, _ := info(ms[0], "m0"); !maps.Equal(mi.Health, want) {
		t.Errorf("after refused updates m0 shows %v; want %v unchanged", mi.Health, want)
	}

	if err := ms[0].SetHealth(nil); err != nil {
		t.Fatalf("SetHealth(nil): %v", err)
	}
	waitFor(t, 5*time.Second, "m2 sees m0's health removed", func() bool {
		mi, _ := info(ms[2], "m0")
		return mi.Health == nil
	})
}

// TestTagLimitMatchesSerf checks encodedTagsLen against serf itself: a
// health map right at the 512-byte limit is accepted by both, one byte
// more is refused by both.
func TestTagLimitMatchesSerf(t *testing.T) {
	log, _ := newLogs(t)
	m := start(t, testConfig("solo", log))

	at512 := healthOfSize(t, 512)
	if err := m.SetHealth(at512); err != nil {
		t.Fatalf("SetHealth at 512 bytes: %v", err)
	}
	at513 := healthOfSize(t, 513)
	if err := m.SetHealth(at513); !errors.Is(err, ErrTagsTooLarge) {
		t.Fatalf("SetHealth at 513 bytes = %v; want ErrTagsTooLarge", err)
	}
	v, _ := encodeHealth(at513)
	if err := m.serf.SetTags(map[string]string{tagHealth: v}); err == nil {
		t.Fatal("serf accepted tags that SetHealth refused")
	}
}

// healthOfSize returns a health map whose tags encode to size bytes.
func healthOfSize(t *testing.T, size int) map[string]Health {
	services := map[string]Health{}
	encoded := func() int {
		v, _ := encodeHealth(services)
		return encodedTagsLen(map[string]string{tagHealth: v})
	}
	for i := 0; encoded() < size-40; i++ {
		services[fmt.Sprintf("s%02d-%s", i, strings.Repeat("x", 20))] = Passing
	}
	for n := 1; n <= maxServiceName; n++ {
		pad := strings.Repeat("y", n)
		if services[pad] = Critical; encoded() == size {
			return services
		}
		delete(services, pad)
	}
	t.Fatalf("no health map of %d encoded bytes", size)
	return nil
}

func TestCrashIsFailedCloseIsLeft(t *testing.T) {
	ms, _ := cluster(t, 3)
	t0 := time.Now()
	if err := ms[2].crash(); err != nil {
		t.Fatalf("crash: %v", err)
	}
	for _, m := range ms[:2] {
		waitFor(t, 5*time.Second, m.name+" sees m2 failed", func() bool {
			return statusOfName(m, "m2") == Failed
		})
		t.Logf("%s marked the crashed m2 failed after %v", m.name, time.Since(t0).Round(time.Millisecond))
	}

	t0 = time.Now()
	if err := ms[1].Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %v", time.Since(t0).Round(time.Millisecond))
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("Close took %v; want about 1 s", d)
	}
	waitFor(t, 5*time.Second, "m0 sees m1 left", func() bool { return statusOfName(ms[0], "m1") == Left })
	if err := ms[1].Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := ms[1].Join([]netip.AddrPort{ms[0].addr()}); !errors.Is(err, ErrClosed) {
		t.Errorf("Join after Close = %v; want ErrClosed", err)
	}
	if err := ms[1].SetHealth(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SetHealth after Close = %v; want ErrClosed", err)
	}
}

func TestRestartRejoins(t *testing.T) {
	ms, _ := cluster(t, 3)
	cfg := testConfig("m2", ms[0].log)
	cfg.BindAddr = ms[2].addr().Addr()
	if err := ms[2].crash(); err != nil {
		t.Fatalf("crash: %v", err)
	}
	for _, m := range ms[:2] {
		waitFor(t, 5*time.Second, m.name+" sees m2 failed", func() bool { return statusOfName(m, "m2") == Failed })
	}

	t0 := time.Now()
	m2 := start(t, cfg)
	if n, err := m2.Join([]netip.AddrPort{ms[0].addr()}); err != nil || n != 1 {
		t.Fatalf("restarted m2 Join = %d, %v", n, err)
	}
	for _, m := range ms[:2] {
		waitFor(t, 5*time.Second, m.name+" sees the restarted m2 alive", func() bool { return statusOfName(m, "m2") == Alive })
		t.Logf("%s sees the restarted m2 alive %v after its start", m.name, time.Since(t0).Round(time.Millisecond))
	}
	waitFor(t, 5*time.Second, "restarted m2 sees all alive", func() bool { return countStatus(m2, Alive) == 3 })
}

func TestKeyMismatchCannotJoin(t *testing.T) {
	ms, lb := cluster(t, 2)
	cfg := testConfig("intruder", ms[0].log, testKey(9))
	x := start(t, cfg)
	if n, err := x.Join([]netip.AddrPort{ms[0].addr()}); err == nil || n != 0 {
		t.Errorf("Join with another key = %d, %v; want 0 and an error", n, err)
	}
	time.Sleep(time.Second)
	for _, m := range ms {
		if _, ok := info(m, "intruder"); ok {
			t.Errorf("%s lists the intruder", m.name)
		}
	}
	if got := len(x.Members()); got != 1 {
		t.Errorf("intruder sees %d members, want only itself", got)
	}
	checkNoKeys(t, lb.String(), testKey(1), testKey(9))
}

func TestKeyRotation(t *testing.T) {
	ms, lb := cluster(t, 3)
	oldKey, newKey := testKey(1), testKey(2)
	steps := []struct {
		name string
		keys [][]byte
	}{
		{"add new key as secondary", [][]byte{oldKey, newKey}},
		{"make new key primary", [][]byte{newKey, oldKey}},
		{"remove old key", [][]byte{newKey}},
	}
	for i, st := range steps {
		for _, m := range ms {
			if err := m.SetKeys(st.keys); err != nil {
				t.Fatalf("%s: %s: SetKeys: %v", st.name, m.name, err)
			}
		}
		// Gossip must still flow: a health change reaches everyone.
		h := map[string]Health{fmt.Sprintf("step%d", i): Passing}
		if err := ms[i].SetHealth(h); err != nil {
			t.Fatalf("%s: SetHealth: %v", st.name, err)
		}
		for _, m := range ms {
			waitFor(t, 5*time.Second, st.name+": "+m.name+" sees the update", func() bool {
				mi, _ := info(m, ms[i].name)
				return maps.Equal(mi.Health, h) && countStatus(m, Alive) == 3
			})
		}
	}
	for _, m := range ms {
		if got := m.trans.ring.Load().keys; len(got) != 1 || string(got[0]) != string(newKey) {
			t.Errorf("%s keyring has %d keys after rotation; want only the new one", m.name, len(got))
		}
	}
	// A member with only the old key is now shut out; one with the new
	// key gets in.
	stale := start(t, testConfig("stale", ms[0].log, oldKey))
	if n, err := stale.Join([]netip.AddrPort{ms[0].addr()}); err == nil || n != 0 {
		t.Errorf("Join with the retired key = %d, %v; want refused", n, err)
	}
	fresh := start(t, testConfig("fresh", ms[0].log, newKey))
	if n, err := fresh.Join([]netip.AddrPort{ms[1].addr()}); err != nil || n != 1 {
		t.Errorf("Join with the new key = %d, %v", n, err)
	}
	if err := ms[0].SetKeys(nil); err == nil {
		t.Error("SetKeys(nil) succeeded; the ring must never be empty")
	}
	if err := ms[0].SetKeys([][]byte{newKey, []byte("short")}); err == nil {
		t.Error("SetKeys with a 5-byte key succeeded")
	}
	if got := len(ms[0].trans.ring.Load().keys); got != 1 {
		t.Errorf("refused SetKeys changed the ring to %d keys", got)
	}
	checkNoKeys(t, lb.String(), oldKey, newKey)
}

// checkNoKeys fails t if logs contain any key, raw, hex or base64.
func checkNoKeys(t *testing.T, logs string, keys ...[]byte) {
	t.Helper()
	for _, k := range keys {
		for _, enc := range keyEncodings(k) {
			if strings.Contains(logs, enc) {
				t.Errorf("a key appears in the logs (%q)", enc)
			}
		}
	}
}

func TestRTTAndStats(t *testing.T) {
	ms, _ := cluster(t, 3)
	// Coordinates come with probe acks; the snapshot refreshes RTTs every
	// 2 s. On loopback they are tiny but positive (each coordinate has a
	// height of at least 10 µs).
	waitFor(t, 8*time.Second, "RTT to every other member", func() bool {
		for _, m := range ms {
			for _, mi := range m.Members() {
				if mi.Name == m.name && mi.RTT != 0 {
					t.Fatalf("%s: RTT to itself = %v", m.name, mi.RTT)
				}
				if mi.Name != m.name && mi.RTT <= 0 {
					return false
				}
			}
		}
		return true
	})
	for _, m := range ms {
		for _, mi := range m.Members() {
			if mi.RTT > 100*time.Millisecond {
				t.Errorf("%s: RTT to %s = %v on loopback", m.name, mi.Name, mi.RTT)
			}
		}
		s := m.Stats()
		t.Logf("%s: %+v, RTTs %v", m.name, s, rtts(m))
		if s.BytesSent == 0 || s.BytesReceived == 0 || s.PacketsSent == 0 || s.PacketsReceived == 0 {
			t.Errorf("%s: Stats = %+v; want all nonzero", m.name, s)
		}
		if s.BytesSent < s.PacketsSent || s.BytesReceived < s.PacketsReceived {
			t.Errorf("%s: Stats = %+v: fewer bytes than packets", m.name, s)
		}
	}
}

func rtts(m *Member) []time.Duration {
	var out []time.Duration
	for _, mi := range m.Members() {
		out = append(out, mi.RTT)
	}
	return out
}
