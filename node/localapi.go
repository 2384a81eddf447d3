package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/gossip"
	"github.com/wiremesh/wiremesh/node/bind"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Status is what `wiremesh status` shows, served on the local API.
type Status struct {
	// Self is this node.
	Self wire.Node `json:"self"`
	// Interface is the WireGuard interface name.
	Interface string `json:"interface"`
	// ListenPort is WireGuard's UDP port.
	ListenPort int `json:"listen_port"`
	// Coordinator is the URL of the coordinator the agent talks to (of
	// several that share a database, the one it uses now).
	Coordinator string `json:"coordinator"`
	// Connected reports whether the netmap stream is open now.
	Connected bool `json:"connected"`
	// LastError says why the stream last ended. Empty: it did not.
	LastError string `json:"last_error,omitempty"`
	// NetmapVersion is the version of the applied netmap (0: none yet).
	NetmapVersion uint64 `json:"netmap_version"`
	// PolicyVersion is the access policy in force (0: none, all inbound
	// traffic is denied).
	PolicyVersion uint64 `json:"policy_version"`
	// InboundRules counts the node's compiled inbound rules.
	InboundRules int `json:"inbound_rules"`
	// Filter are the packet filter's counters. Nil: the filter is off.
	Filter *FilterStats `json:"filter,omitempty"`
	// Peers are the netmap's peers with their WireGuard counters.
	Peers []PeerStatus `json:"peers"`
	// Services are the node's local services with their checks.
	Services []ServiceStatus `json:"services"`
	// Gossip is the serf member's traffic. Nil: gossip is not running.
	Gossip *GossipStats `json:"gossip,omitempty"`
	// DNS is the DNS server's loopback address. Empty: DNS is off.
	DNS string `json:"dns,omitempty"`
	// NAT is this node's NAT type as STUN found it (wire.NAT*).
	NAT string `json:"nat"`
	// HomeRelay is the relay this node prefers. Empty: none connected.
	HomeRelay string `json:"home_relay,omitempty"`
	// Candidates are this node's direct addresses, best first, as its
	// peers are told them.
	Candidates []string `json:"candidates"`
	// Relays are the relays of the relay map, with their connections.
	Relays []RelayState `json:"relays,omitempty"`
	// RelayOnly and NoRelay are the agent's --relay-only and --no-relay.
	RelayOnly bool `json:"relay_only,omitempty"`
	NoRelay   bool `json:"no_relay,omitempty"`
}

// GossipStats are the serf member's counters.
type GossipStats struct {
	Members       int    `json:"members"` // alive, self included
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
}

// FilterStats are the inbound packet filter's counters.
type FilterStats struct {
	Accepted uint64            `json:"accepted"`
	Dropped  map[string]uint64 `json:"dropped"` // by reason ("no rule", "malformed", "fragment", "not own address")
	Conns    int               `json:"conns"`   // tracked flows
}

// PeerStatus is one peer in Status.
type PeerStatus struct {
	Name      string   `json:"name"`
	PublicKey string   `json:"public_key"`
	Addresses []string `json:"addresses"`
	// Gossip is the peer's serf status: "alive", "failed", "left", or
	// empty when gossip does not know it (yet).
	Gossip string `json:"gossip,omitempty"`
	// RTT is the round-trip time serf's coordinates estimate. Zero:
	// unknown.
	RTT wire.Duration `json:"rtt,omitempty"`
	// Services are the peer's services this node may reach.
	Services []string `json:"services,omitempty"`
	// Denied counts the inbound packets from the peer the filter
	// dropped since the agent started.
	Denied uint64 `json:"denied"`
	// Path is how the peer is reached now: its kind (direct, relay,
	// none), address or relay, RTT, when it last changed and why it is
	// not direct.
	Path wire.PeerPath `json:"path"`
	// Candidates are the peer's direct addresses known here.
	Candidates []string `json:"candidates,omitempty"`
	PeerStats
}

// Status returns the agent's current status.
func (a *Agent) Status() (Status, error) {
	nm := a.data.current()
	connected, lastErr := a.ctl.streamState()
	st := Status{
		Self: a.ctl.id.Node, Interface: a.cfg.Interface, ListenPort: a.cfg.ListenPort,
		Coordinator: a.ctl.id.Coordinator, Connected: connected, LastError: lastErr, Peers: []PeerStatus{},
	}
	if api := a.ctl.api; api != nil {
		st.Coordinator, _ = api.current()
	}
	if svc := a.svc.Load(); svc != nil {
		st.Services = svc.status()
	}
	var dropped map[netip.Addr]uint64
	if a.data.filter != nil {
		fs := a.data.filter.Stats()
		dropped = fs.DroppedFrom
		st.Filter = &FilterStats{Accepted: fs.Accepted, Dropped: map[string]uint64{}, Conns: fs.Conns}
		for v, n := range fs.Dropped {
			st.Filter.Dropped[v.String()] = n
		}
	}
	st.NAT, st.RelayOnly, st.NoRelay = string(a.data.bind.NAT()), a.cfg.RelayOnly, a.cfg.NoRelay
	st.Candidates = []string{}
	for _, c := range a.data.bind.LocalCandidates() {
		st.Candidates = append(st.Candidates, c.String())
	}
	if !a.cfg.NoRelay {
		st.HomeRelay, st.Relays = a.data.relays.Home(), a.data.relays.states()
	}
	if nm == nil {
		return st, nil
	}
	st.Self, st.NetmapVersion = nm.Self, nm.Version
	st.PolicyVersion, st.InboundRules = nm.PolicyVersion, len(nm.Rules)
	stats, err := a.data.engine.Stats()
	if err != nil {
		return st, err
	}
	if a.mesh.dns != nil {
		st.DNS = netip.AddrPortFrom(a.cfg.DNSAddr, uint16(a.cfg.DNSPort)).String()
	}
	members := map[string]gossip.MemberInfo{}
	if m := a.mesh.member.Load(); m != nil {
		gs := m.Stats()
		st.Gossip = &GossipStats{BytesSent: gs.BytesSent, BytesReceived: gs.BytesReceived}
		for _, mi := range m.Members() {
			members[mi.Name] = mi
			if mi.Status == gossip.Alive {
				st.Gossip.Members++
			}
		}
	}
	paths := map[string]bind.PathStatus{}
	for _, ps := range a.data.bind.Paths() {
		paths[wgtypes.Key(ps.Peer).String()] = ps
	}
	for _, p := range nm.Peers {
		ps := PeerStatus{Name: p.Name, PublicKey: p.PublicKey, PeerStats: stats[p.PublicKey], Path: wire.PeerPath{Peer: p.Name, Kind: wire.PathKindNone}}
		if path, ok := paths[p.PublicKey]; ok {
			ps.Path = peerPath(p.Name, path)
			for _, c := range path.Candidates {
				ps.Candidates = append(ps.Candidates, c.String())
			}
		}
		for _, ad := range p.Addresses {
			ps.Addresses = append(ps.Addresses, ad.Addr().String())
		}
		if mi, ok := members[p.Name]; ok {
			ps.Gossip, ps.RTT = mi.Status.String(), wire.Duration(mi.RTT)
		}
		for _, sv := range p.Services {
			ps.Services = append(ps.Services, sv.Name)
		}
		for _, ad := range p.Addresses {
			ps.Denied += dropped[ad.Addr()]
		}
		st.Peers = append(st.Peers, ps)
	}
	return st, nil
}

// localAPI serves the agent's unix socket.
type localAPI struct {
	srv  *http.Server
	path string
	wg   sync.WaitGroup
}

func (a *Agent) listenLocalAPI() (*localAPI, error) {
	path := a.state.file(SocketName)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("local API socket %s is in use", path)
	}
	os.Remove(path) // stale from a killed agent
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("local API: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("local API: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		st, err := a.Status()
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(wire.Error{Error: err.Error()})
			return
		}
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("POST /v1/ping", a.handlePing)
	mux.HandleFunc("POST /v1/rotate-key", a.handleRotateKey)
	a.svc.Load().handle(mux)
	a.handleFlows(mux)
	l := &localAPI{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, path: path}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("local API stopped", "err", err)
		}
	}()
	return l, nil
}

func (l *localAPI) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l.srv.Shutdown(ctx)
	l.wg.Wait()
	os.Remove(l.path)
}

// LocalClient returns an HTTP client that reaches the agent whose state dir
// is dir over its socket.
func LocalClient(dir string) *http.Client {
	path := dir + "/" + SocketName
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}
