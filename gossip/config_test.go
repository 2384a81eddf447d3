package gossip

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := func() Config {
		return Config{Name: "n1", BindAddr: netip.MustParseAddr("100.64.0.1"), Keys: [][]byte{testKey(1)}}
	}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{name: "zeros are defaults", edit: func(*Config) {}},
		{name: "defaults spelled out", edit: func(c *Config) {
			d := DefaultConfig()
			d.Name, d.BindAddr, d.Keys = c.Name, c.BindAddr, c.Keys
			*c = d
		}},
		{name: "keys of every size", edit: func(c *Config) { c.Keys = [][]byte{make([]byte, 16), make([]byte, 24), make([]byte, 32)} }},
		{name: "no name", edit: func(c *Config) { c.Name = "" }, wantErr: "name is required"},
		{name: "no address", edit: func(c *Config) { c.BindAddr = netip.Addr{} }, wantErr: "bind address is required"},
		{name: "unspecified", edit: func(c *Config) { c.BindAddr = netip.IPv4Unspecified() }, wantErr: "unspecified"},
		{name: "port", edit: func(c *Config) { c.Port = 70000 }, wantErr: "out of range"},
		{name: "no keys", edit: func(c *Config) { c.Keys = nil }, wantErr: "at least one key"},
		{name: "short key", edit: func(c *Config) { c.Keys = [][]byte{testKey(1), make([]byte, 15)} }, wantErr: "key 2"},
		{name: "timeout over interval", edit: func(c *Config) { c.ProbeTimeout = time.Second }, wantErr: "less than probe interval"},
		{name: "negative", edit: func(c *Config) { c.GossipInterval = -1 }, wantErr: "negative"},
		{name: "negative mult", edit: func(c *Config) { c.SuspicionMult = -1 }, wantErr: "negative"},
	}
	for _, tt := range tests {
		c := ok()
		tt.edit(&c)
		err := c.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: Validate() = %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: Validate() = %v; want an error with %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	if _, err := New(Config{Name: "x"}); err == nil {
		t.Fatal("New without address or keys succeeded")
	}
}

func TestNewPortInUse(t *testing.T) {
	log, _ := newLogs(t)
	cfg := testConfig("first", log)
	start(t, cfg)
	cfg.Name = "second"
	if m, err := New(cfg); err == nil {
		_ = m.crash()
		t.Fatal("a second member on the same address and port started")
	}
}
