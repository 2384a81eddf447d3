package ui

import (
	"net/http"

	"github.com/wiremesh/wiremesh/wire"
)

// recentAudit is how many audit entries the overview lists.
const recentAudit = 10

// overviewData is the overview page's data. Each part carries its own
// error, so one failing call does not hide the others.
type overviewData struct {
	Nodes                            int
	Online, Offline, Expired         int
	NodesErr                         string
	Services, Failing                int
	Passing, Warning, Critical, None int // instances by health
	ServicesErr                      string
	Policy                           wire.Policy
	PolicyErr                        string
	Audit                            []wire.AuditEntry
	AuditErr                         string
}

func (u *UI) handleOverview(w http.ResponseWriter, r *http.Request, s *session) {
	var d overviewData
	var errs []error
	errs = append(errs, u.overviewNodes(r, s, &d), u.overviewServices(r, s, &d))
	_, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathPolicy, nil, &d.Policy)
	errs = append(errs, err)
	d.PolicyErr = errText(err)
	_, err = u.api.call(r.Context(), s.token, http.MethodGet, pagePath(wire.PathAudit, recentAudit, ""), nil, &d.Audit)
	errs = append(errs, err)
	d.AuditErr = errText(err)
	for _, err := range errs {
		if statusOf(err) == http.StatusUnauthorized {
			u.apiFailed(w, r, s, err)
			return
		}
	}
	if r.URL.Query().Get("fragment") == "summary" {
		u.renderFragment(w, r, s, "overview", "summary", d)
		return
	}
	u.render(w, r, s, http.StatusOK, "overview", "Overview", d)
}

func (u *UI) overviewNodes(r *http.Request, s *session, d *overviewData) error {
	nodes, err := listAll[wire.Node](r.Context(), u.api, s.token, wire.PathNodes)
	d.NodesErr = errText(err)
	d.Nodes = len(nodes)
	now := u.cfg.Now()
	for _, n := range nodes {
		switch nodeState(now, n) {
		case "expired":
			d.Expired++
		case "online":
			d.Online++
		default:
			d.Offline++
		}
	}
	return err
}

func (u *UI) overviewServices(r *http.Request, s *session, d *overviewData) error {
	var svcs []wire.CatalogService
	_, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathServices, nil, &svcs)
	d.ServicesErr = errText(err)
	d.Services = len(svcs)
	for _, sv := range svcs {
		failing := false
		for _, in := range sv.Instances {
			if in.Refused != "" { // not an instance: the policy refuses it
				continue
			}
			switch in.Health {
			case "passing":
				d.Passing++
			case "warning":
				d.Warning++
			case "critical":
				d.Critical++
				failing = true
			default:
				d.None++
			}
		}
		if failing {
			d.Failing++
		}
	}
	return err
}

// errText is err's message, or "" for nil.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
