package node

import (
	"context"
	"net/http"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// wakeReport asks the reporter to send the services report again.
func (s *services) wakeReport() {
	select {
	case s.reportNow <- struct{}{}:
	default:
	}
}

// runReporter sends the node's services and their health with send
// whenever wakeReport is called, retrying with backoff until one report
// gets through; several wake-ups while it waits make one report. It
// returns when ctx is done.
func (s *services) runReporter(ctx context.Context, send func(context.Context, []wire.Service) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reportNow:
		}
		for b := newBackoff(); ; {
			err := send(ctx, s.report())
			if err == nil || ctx.Err() != nil {
				break
			}
			s.log.Warn("services not reported to the coordinator; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(b.next()):
			}
		}
	}
}

// report is the services and their checks as the coordinator takes them.
func (s *services) report() []wire.Service {
	out := []wire.Service{}
	for _, st := range s.status() {
		sv := wire.Service{Name: st.Name, Port: st.Port, Proto: st.Protocol, Tags: st.Tags, Health: st.Health.String()}
		for _, c := range st.Checks {
			sv.Checks = append(sv.Checks, wire.CheckStatus{ID: c.CheckID, Status: c.Status.String(), Output: c.Output})
		}
		out = append(out, sv)
	}
	return out
}

// report sends one services report, with proofs of the node's key.
func (c *control) report(ctx context.Context, services []wire.Service) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ck, err := c.coordinatorKey(ctx)
	if err != nil {
		return err
	}
	req := wire.ServicesReport{Services: services}
	if err := c.servicesProof(ck, &req); err != nil {
		return err
	}
	return c.call(ctx, http.MethodPut, wire.PathServicesReport, req)
}
