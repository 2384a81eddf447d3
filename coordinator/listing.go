package coordinator

import (
	"sort"

	"github.com/wiremesh/wiremesh/wire"
)

// pageOf returns up to limit nodes with ids greater than after.
func pageOf(nodes []wire.Node, after int64, limit int) []wire.Node {
	i := sort.Search(len(nodes), func(i int) bool { return nodes[i].ID > after })
	return nodes[i:min(len(nodes), i+limit)]
}
