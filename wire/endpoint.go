package wire

import (
	"fmt"
	"net/netip"
)

// MaxEndpoints is the most endpoints a MapRequest (the agent's --endpoint
// flags) may name. Each change of a node's endpoints goes to every peer,
// so the list is kept short and made of literals that cost nothing to
// resolve.
const MaxEndpoints = 8

// CheckEndpoints checks endpoints as MapRequest.Endpoints takes them: at
// most MaxEndpoints, each an IP:port literal (no host names) with a
// non-zero port and a unicast address. The error names the limit or the
// offending entry; the coordinator answers it with 400 and the agent
// refuses its --endpoint flags with it.
func CheckEndpoints(endpoints []string) error {
	if len(endpoints) > MaxEndpoints {
		return fmt.Errorf("%d endpoints given: at most %d are allowed", len(endpoints), MaxEndpoints)
	}
	for _, e := range endpoints {
		if err := checkEndpoint(e); err != nil {
			return fmt.Errorf("bad endpoint %q: %w", e, err)
		}
	}
	return nil
}

func checkEndpoint(e string) error {
	ap, err := netip.ParseAddrPort(e)
	switch {
	case err != nil:
		return fmt.Errorf("want an IP:port literal such as 192.0.2.1:51820 or [2001:db8::1]:51820 (no host names)")
	case ap.Port() == 0:
		return fmt.Errorf("port 0")
	case ap.Addr().Zone() != "":
		return fmt.Errorf("an address with a zone is only meaningful on this host")
	case ap.Addr().IsUnspecified():
		return fmt.Errorf("the unspecified address %s names no host", ap.Addr())
	case ap.Addr().IsMulticast():
		return fmt.Errorf("multicast address %s", ap.Addr())
	}
	return nil
}
