package node

import (
	"fmt"
	"slices"
	"strings"

	"github.com/wiremesh/wiremesh/credential"
)

// coordinatorPins returns the pins the agent trusts the coordinator by.
func (c *control) coordinatorPins() credential.Pins {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pins
}

// adoptPins keeps the coordinator's pin set from a netmap received over a
// connection the current pins authenticated: new connections are trusted
// by it, and node.json keeps it, so the coordinator rolls its certificate
// without re-enrolling nodes. This is also how a node enrolled before key
// pins (pinning its coordinator's CA, perhaps a public one) moves to the
// key pin on its first netmap. An empty set (an older coordinator)
// changes nothing.
func (c *control) adoptPins(ss []string) {
	if len(ss) == 0 {
		return
	}
	pins, err := credential.ParsePins(ss)
	if err != nil {
		c.log.Warn("ignoring the coordinator pins of a netmap", "err", err)
		return
	}
	c.mu.Lock()
	same := c.pins.Equal(pins)
	c.pins = pins
	c.mu.Unlock()
	if same {
		return
	}
	c.log.Info("coordinator pins changed", "pin", pins.String())
	if err := c.saveIdentity(); err != nil {
		c.log.Warn("cannot keep the coordinator pins; using them until the agent stops", "err", err)
	}
}

// adoptURLs keeps the coordinator URLs of a netmap (checked like a join
// key's; at most credential.MaxURLs): the agent fails over to them, and
// node.json keeps them. An empty list (an older coordinator) changes
// nothing.
func (c *control) adoptURLs(urls []string) {
	if len(urls) == 0 {
		return
	}
	if len(urls) > credential.MaxURLs {
		c.log.Warn("ignoring the coordinator URLs of a netmap", "err", fmt.Sprintf("%d URLs: at most %d", len(urls), credential.MaxURLs))
		return
	}
	for _, u := range urls {
		if err := credential.CheckURL(u); err != nil {
			c.log.Warn("ignoring the coordinator URLs of a netmap", "err", err)
			return
		}
	}
	if !c.api.setURLs(urls) {
		return
	}
	c.mu.Lock()
	c.urls = slices.Clone(urls)
	c.mu.Unlock()
	c.log.Info("coordinator URLs changed", "urls", strings.Join(urls, " "))
	if err := c.saveIdentity(); err != nil {
		c.log.Warn("cannot keep the coordinator URLs; using them until the agent stops", "err", err)
	}
}
