//go:build !race

package acl

// raceEnabled is whether the race detector is on; the random tests do
// fewer rounds under it.
const raceEnabled = false
