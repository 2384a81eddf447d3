package store

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// Limits on what an agent may report.
const (
	maxServices    = 64   // per node
	maxChecks      = 32   // per service
	maxServiceTags = 32   // per service
	maxCheckOutput = 1024 // bytes kept of a check's output
)

// reportedHealth is the last reported health of one service.
type reportedHealth struct {
	Health string             `json:"health"`
	Checks []wire.CheckStatus `json:"checks,omitempty"`
}

// validServices checks an agent's report and returns the definitions
// (without health) in a canonical form, and the health by service name.
func validServices(svcs []wire.Service) ([]wire.Service, map[string]reportedHealth, error) {
	if len(svcs) > maxServices {
		return nil, nil, fmt.Errorf("%w: %d services; the limit is %d", ErrInvalid, len(svcs), maxServices)
	}
	defs := make([]wire.Service, 0, len(svcs))
	health := make(map[string]reportedHealth, len(svcs))
	for i, sv := range svcs {
		what := fmt.Sprintf("service %d", i+1)
		if !wire.IsLabel(sv.Name) {
			return nil, nil, fmt.Errorf("%w: %s: bad name %q: want a DNS label (lowercase letters, digits, '-')", ErrInvalid, what, sv.Name)
		}
		what = fmt.Sprintf("service %q", sv.Name)
		if _, dup := health[sv.Name]; dup {
			return nil, nil, fmt.Errorf("%w: %s is listed twice", ErrInvalid, what)
		}
		if sv.Port == 0 {
			return nil, nil, fmt.Errorf("%w: %s: port 0", ErrInvalid, what)
		}
		switch sv.Proto {
		case "", wire.ServiceTCP:
			sv.Proto = ""
		case wire.ServiceUDP:
		default:
			return nil, nil, fmt.Errorf("%w: %s: bad protocol %q: want tcp or udp", ErrInvalid, what, sv.Proto)
		}
		if len(sv.Tags) > maxServiceTags {
			return nil, nil, fmt.Errorf("%w: %s: %d tags; the limit is %d", ErrInvalid, what, len(sv.Tags), maxServiceTags)
		}
		for _, t := range sv.Tags {
			if !wire.IsLabel(t) {
				return nil, nil, fmt.Errorf("%w: %s: bad tag %q: want a DNS label", ErrInvalid, what, t)
			}
		}
		if !validHealth(sv.Health) {
			return nil, nil, fmt.Errorf("%w: %s: bad health %q: want passing, warning or critical", ErrInvalid, what, sv.Health)
		}
		if len(sv.Checks) > maxChecks {
			return nil, nil, fmt.Errorf("%w: %s: %d checks; the limit is %d", ErrInvalid, what, len(sv.Checks), maxChecks)
		}
		checks := slices.Clone(sv.Checks)
		for j, c := range checks {
			if c.ID == "" || len(c.ID) > 128 || !validHealth(c.Status) || c.Status == "" {
				return nil, nil, fmt.Errorf("%w: %s: check %d: want an id (at most 128 bytes) and a status of passing, warning or critical", ErrInvalid, what, j+1)
			}
			if len(c.Output) > maxCheckOutput {
				checks[j].Output = c.Output[:maxCheckOutput]
			}
		}
		health[sv.Name] = reportedHealth{Health: sv.Health, Checks: checks}
		defs = append(defs, wire.Service{Name: sv.Name, Port: sv.Port, Proto: sv.Proto, Tags: sv.Tags})
	}
	slices.SortFunc(defs, func(a, b wire.Service) int { return cmp.Compare(a.Name, b.Name) })
	return defs, health, nil
}

func validHealth(h string) bool {
	v, err := wire.ParseHealth(h)
	return h == "" || err == nil && v.String() == h
}

// SetServices records node n's services and their health. Definitions
// that differ from the stored ones are written in a versioned transaction
// (they change netmaps and may change the compiled policy), with an audit
// entry per service added, changed or removed, actor the node; refused
// says why the policy does not let n provide a service ("" if it may),
// and such a service is audited as service.refused. The new version is
// returned; health alone is written without bumping the version, and 0
// is returned.
func (s *DB) SetServices(ctx context.Context, n wire.Node, svcs []wire.Service, refused func(service string) string) (uint64, error) {
	defs, health, err := validServices(svcs)
	if err != nil {
		return 0, err
	}
	dj, _ := json.Marshal(defs)
	hj, _ := json.Marshal(health)
	var cur string
	if err := s.q().row(ctx, "SELECT services FROM nodes WHERE id = ?", n.ID).Scan(&cur); err != nil {
		return 0, fmt.Errorf("read services: %w", err)
	}
	if cur == string(dj) {
		if _, err := s.q().exec(ctx, "UPDATE nodes SET health = ? WHERE id = ?", string(hj), n.ID); err != nil {
			return 0, fmt.Errorf("write health: %w", err)
		}
		return 0, nil
	}
	var old []wire.Service
	if err := json.Unmarshal([]byte(cur), &old); err != nil {
		return 0, fmt.Errorf("read services of %s: %w", n.Name, err)
	}
	return s.tx(ctx, func(tx conn) error {
		_, err := tx.exec(ctx, "UPDATE nodes SET services = ?, health = ?, changed = "+curVersion+" WHERE id = ?", string(dj), string(hj), n.ID)
		if err != nil {
			return fmt.Errorf("write services: %w", err)
		}
		return auditServices(ctx, tx, s.now(), n.Name, old, defs, refused)
	})
}

// auditServices writes an audit entry for each service of node that is
// added, changed or removed between old and new (both sorted by name).
func auditServices(ctx context.Context, tx conn, now time.Time, node string, old, new []wire.Service, refused func(string) string) error {
	was := make(map[string]wire.Service, len(old))
	for _, sv := range old {
		was[sv.Name] = sv
	}
	for _, sv := range new {
		prev, ok := was[sv.Name]
		delete(was, sv.Name)
		action := "service.add"
		if ok {
			if slices.Equal(prev.Tags, sv.Tags) && prev.Port == sv.Port && prev.Proto == sv.Proto {
				continue
			}
			action = "service.change"
		}
		detail := fmt.Sprintf("%s/%d", cmp.Or(sv.Proto, wire.ServiceTCP), sv.Port)
		if why := refused(sv.Name); why != "" {
			action, detail = "service.refused", detail+": "+why
		}
		if err := audit(ctx, tx, now, node, action, sv.Name, detail); err != nil {
			return err
		}
	}
	for _, sv := range old {
		if _, gone := was[sv.Name]; gone {
			if err := audit(ctx, tx, now, node, "service.remove", sv.Name, fmt.Sprintf("%s/%d", cmp.Or(sv.Proto, wire.ServiceTCP), sv.Port)); err != nil {
				return err
			}
		}
	}
	return nil
}

// withHealth returns n's services with their reported health filled in.
func withHealth(n wire.Node, h map[string]reportedHealth) []wire.Service {
	out := slices.Clone(n.Services)
	for i := range out {
		if r, ok := h[out[i].Name]; ok {
			out[i].Health, out[i].Checks = r.Health, r.Checks
		}
	}
	return out
}
