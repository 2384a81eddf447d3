package node

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"

	"github.com/wiremesh/wiremesh/health"
	"github.com/wiremesh/wiremesh/service"
	"github.com/wiremesh/wiremesh/wire"
)

// services is the agent's part that holds the node's local services:
// those of the config file and those registered at runtime through the
// local API. It runs their checks and reports them to the coordinator
// (runReporter). It calls no other part; it holds mu while it hands the
// definitions to its runner.
type services struct {
	file      string // the services file; empty: none
	runner    *health.Runner
	log       *slog.Logger
	changed   chan struct{} // a value after the definitions changed (buffered 1)
	reportNow chan struct{} // wakes the reporter (buffered 1)

	mu      sync.Mutex
	fromCfg []service.Definition // guarded by mu; from the file
	runtime []service.Definition // guarded by mu; registered through the local API (kept in memory only)
}

func newServices(file string, runner *health.Runner, log *slog.Logger) *services {
	return &services{file: file, runner: runner, log: log, changed: make(chan struct{}, 1), reportNow: make(chan struct{}, 1)}
}

// load reads the services file (if any). On error nothing changes.
func (s *services) load() error {
	if s.file == "" {
		return nil
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		return fmt.Errorf("read services: %w", err)
	}
	defs, err := service.Parse(s.file, b)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked(defs, s.runtime)
}

// applyLocked makes fromCfg and runtime the services, if the runner takes
// them.
func (s *services) applyLocked(fromCfg, runtime []service.Definition) error {
	all := slices.Concat(fromCfg, runtime)
	for i, d := range all {
		for _, o := range all[:i] {
			if o.Name == d.Name {
				return fmt.Errorf("service %q is defined twice (config file and registration)", d.Name)
			}
		}
	}
	if err := s.runner.Set(all); err != nil {
		return err
	}
	s.fromCfg, s.runtime = fromCfg, runtime
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

// register adds or replaces runtime services.
func (s *services) register(defs []service.Definition) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := slices.DeleteFunc(slices.Clone(s.runtime), func(o service.Definition) bool {
		return slices.ContainsFunc(defs, func(d service.Definition) bool { return d.Name == o.Name })
	})
	return s.applyLocked(s.fromCfg, append(rt, defs...))
}

// deregister removes a runtime service.
func (s *services) deregister(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.runtime, func(d service.Definition) bool { return d.Name == name })
	if i < 0 {
		if slices.ContainsFunc(s.fromCfg, func(d service.Definition) bool { return d.Name == name }) {
			return fmt.Errorf("service %q comes from the config file %s; remove it there", name, s.file)
		}
		return fmt.Errorf("no registered service %q", name)
	}
	return s.applyLocked(s.fromCfg, slices.Delete(slices.Clone(s.runtime), i, i+1))
}

// ServiceStatus is a local service and the state of its checks.
type ServiceStatus struct {
	Name     string          `json:"name"`
	Port     uint16          `json:"port"`
	Protocol string          `json:"protocol"`
	Tags     []string        `json:"tags,omitempty"`
	Health   wire.Health     `json:"health"`
	Checks   []health.Result `json:"checks"`
}

// status lists the services with their checks.
func (s *services) status() []ServiceStatus {
	s.mu.Lock()
	defs := slices.Concat(s.fromCfg, s.runtime)
	s.mu.Unlock()
	results := s.runner.Results()
	out := []ServiceStatus{}
	for _, d := range defs {
		st := ServiceStatus{Name: d.Name, Port: d.Port, Protocol: d.Protocol, Tags: d.Tags, Checks: []health.Result{}}
		for _, r := range results {
			if r.Service == d.Name {
				st.Checks = append(st.Checks, r)
			}
		}
		st.Health = health.Aggregate(st.Checks)
		out = append(out, st)
	}
	return out
}

// handle adds the services and checks endpoints to the local API.
func (s *services) handle(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/services", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err == nil {
			var defs []service.Definition
			if defs, err = service.ParseRegistration(r.URL.Query().Get("file"), b); err == nil {
				err = s.register(defs)
			}
		}
		replyLocal(w, err, nil)
	})
	mux.HandleFunc("DELETE /v1/services/{name}", func(w http.ResponseWriter, r *http.Request) {
		replyLocal(w, s.deregister(r.PathValue("name")), nil)
	})
	mux.HandleFunc("POST /v1/checks/{id}/{status}", func(w http.ResponseWriter, r *http.Request) {
		st, err := wire.ParseHealth(r.PathValue("status"))
		if err == nil {
			err = s.runner.ReportTTL(r.PathValue("id"), st, r.URL.Query().Get("note"))
		}
		replyLocal(w, err, nil)
	})
}

// replyLocal answers a local API call: 204, the value as JSON, or 400 with
// the error.
func replyLocal(w http.ResponseWriter, err error, v any) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case err != nil:
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(wire.Error{Error: err.Error()})
	case v == nil:
		w.WriteHeader(http.StatusNoContent)
	default:
		json.NewEncoder(w).Encode(v)
	}
}
