package wire_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

func TestCheckEndpoints(t *testing.T) {
	eight := make([]string, wire.MaxEndpoints)
	for i := range eight {
		eight[i] = fmt.Sprintf("192.0.2.%d:51820", i+1)
	}
	for _, ok := range [][]string{nil, {"192.0.2.1:51820"}, {"[2001:db8::1]:51820", "198.51.100.7:1"}, eight} {
		if err := wire.CheckEndpoints(ok); err != nil {
			t.Errorf("CheckEndpoints(%q): %v", ok, err)
		}
	}
	for _, tc := range []struct {
		eps  []string
		want string
	}{
		{append(eight, "203.0.113.1:51820"), "9 endpoints given: at most 8"},
		{[]string{"vpn.example.com:51820"}, `bad endpoint "vpn.example.com:51820": want an IP:port literal`},
		{[]string{"192.0.2.1"}, `bad endpoint "192.0.2.1": want an IP:port literal`},
		{[]string{"192.0.2.1:0"}, `bad endpoint "192.0.2.1:0": port 0`},
		{[]string{"0.0.0.0:51820"}, "unspecified address"},
		{[]string{"[::]:51820"}, "unspecified address"},
		{[]string{"224.0.0.1:51820"}, "multicast address"},
		{[]string{"[ff02::1]:51820"}, "multicast address"},
		{[]string{"[fe80::1%eth0]:51820"}, "zone"},
		{[]string{"192.0.2.1:51820", "nonsense"}, `bad endpoint "nonsense"`},
	} {
		err := wire.CheckEndpoints(tc.eps)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckEndpoints(%q) = %v, want an error containing %q", tc.eps, err, tc.want)
		}
	}
}
