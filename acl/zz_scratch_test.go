package acl

import (
	"fmt"
	"net/netip"
	"testing"
	"slices"
)

func TestZZScratch(t *testing.T) {
	var nodes []Node
	for i := 1; i <= 30; i++ {
		nodes = append(nodes, Node{ID: int64(i), Name: fmt.Sprintf("n-%02d", i), Tags: []string{"tag:x"}, Addrs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("100.64.0.%d/32", i))}})
	}
	a, _ := Parse("a", []byte(`{"acls":[{"action":"accept","src":["*"],"dst":["*:22"]}]}`))
	b, _ := Parse("b", []byte(`{"acls":[{"action":"accept","src":["*"],"dst":["*:80"]}]}`))
	ca, cb := Compile(a, nodes), Compile(b, nodes)
	first := Diff(ca, cb)
	bad := 0
	for _, ch := range first[:8] { fmt.Println(ch) }
	for i := 0; i < 50; i++ {
		d := Diff(ca, cb)
		if !slices.EqualFunc(d, first, func(x, y Change) bool { return x.String() == y.String() }) { bad++ }
	}
	misorder := 0
	for i := 1; i < len(first); i++ {
		if first[i-1].Src == first[i].Src && first[i-1].Dst == first[i].Dst && first[i-1].Proto == first[i].Proto && !first[i-1].Gained && first[i].Gained { misorder++ }
	}
	fmt.Println("differs", bad, "lost-before-gained", misorder, len(first))
}
