package acl

import (
	"fmt"
	"slices"
	"strings"
)

// Refused returns why a node named node with tags may not provide service
// under p, or "" if it may. With a "services" section, the node must match
// one of the service's owners (a tag it has or its name), and a service
// the section does not list has no provider. Without one, the node must
// have the tag named like the service (tag:api for api). A nil policy
// follows the rule without a section.
//
// A refused service matches no svc: selector, is in no netmap, no catalog
// and no DNS answer: nothing a node says about itself grants it rights.
func (p *Policy) Refused(node string, tags []string, service string) string {
	if p == nil || p.Services == nil {
		if slices.ContainsFunc(tags, func(t string) bool { return strings.TrimPrefix(t, "tag:") == service && len(t) > len(service) }) {
			return ""
		}
		return fmt.Sprintf("not allowed: the policy has no \"services\" section, and only a node tagged tag:%s may provide %s", service, service)
	}
	owners, ok := p.Services[service]
	if !ok {
		return fmt.Sprintf("not allowed: the policy's \"services\" does not list %s, so no node may provide it", service)
	}
	for _, o := range owners {
		if o.Kind == SelNode && o.Name == node || o.Kind == SelTag && slices.Contains(tags, o.Name) {
			return ""
		}
	}
	if len(owners) == 0 {
		return fmt.Sprintf("not allowed: the policy's \"services\" lists no owner of %s", service)
	}
	names := make([]string, len(owners))
	for i, o := range owners {
		names[i] = o.String()
	}
	return fmt.Sprintf("not allowed: only %s may provide %s", strings.Join(names, ", "), service)
}

// owned returns nodes with only the services p lets each provide. Nodes
// that lose none are shared, not copied.
func owned(p *Policy, nodes []Node) []Node {
	var out []Node
	for i, n := range nodes {
		keep := n.Services[:0:0]
		for _, s := range n.Services {
			if p.Refused(n.Name, n.Tags, s.Name) == "" {
				keep = append(keep, s)
			}
		}
		if len(keep) == len(n.Services) {
			continue
		}
		if out == nil {
			out = slices.Clone(nodes)
		}
		out[i].Services = keep
	}
	if out == nil {
		return nodes
	}
	return out
}

// ProviderChange is a service on a node that a policy change lets the node
// provide (Allowed) or no longer.
type ProviderChange struct {
	Allowed bool   `json:"allowed"`
	Node    string `json:"node"`
	Service string `json:"service"`
}

// String returns "+ svc:api on api-1" (or "-" when no longer allowed).
func (ch ProviderChange) String() string {
	sign := "-"
	if ch.Allowed {
		sign = "+"
	}
	return fmt.Sprintf("%s svc:%s on %s", sign, ch.Service, ch.Node)
}

// ProviderChanges lists the services that new lets their nodes provide
// and old does not, and the reverse, by node and service. Both must have
// been compiled against the same nodes.
func ProviderChanges(old, new *Compiled) []ProviderChange {
	var out []ProviderChange
	for _, n := range new.reported {
		seen := map[string]bool{}
		for _, s := range n.Services {
			if seen[s.Name] {
				continue
			}
			seen[s.Name] = true
			was := old.policy.Refused(n.Name, n.Tags, s.Name) == ""
			is := new.policy.Refused(n.Name, n.Tags, s.Name) == ""
			if was != is {
				out = append(out, ProviderChange{Allowed: is, Node: n.Name, Service: s.Name})
			}
		}
	}
	return out
}
