package node

import (
	"context"
	"net/http"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// wakeReport asks the reporter to send the services report again.
func (a *Agent) wakeReport() {
	select {
	case a.reportNow <- struct{}{}:
	default:
	}
}

// runReporter sends the node's services and their health to the
// coordinator whenever wakeReport is called, retrying with backoff until
// one report gets through; several wake-ups while it waits make one
// report. It returns when ctx is done.
func (a *Agent) runReporter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reportNow:
		}
		for b := newBackoff(); ; {
			err := a.report(ctx)
			if err == nil || ctx.Err() != nil {
				break
			}
			a.log.Warn("services not reported to the coordinator; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(b.next()):
			}
		}
	}
}

// report sends one services report.
func (a *Agent) report(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ck, err := a.ctl.coordinatorKey(ctx)
	if err != nil {
		return err
	}
	req := wire.ServicesReport{Services: []wire.Service{}}
	for _, s := range a.svc.status() {
		sv := wire.Service{Name: s.Name, Port: s.Port, Proto: s.Protocol, Tags: s.Tags, Health: s.Health.String()}
		for _, c := range s.Checks {
			sv.Checks = append(sv.Checks, wire.CheckStatus{ID: c.CheckID, Status: c.Status.String(), Output: c.Output})
		}
		req.Services = append(req.Services, sv)
	}
	if err := a.ctl.servicesProof(ck, &req); err != nil {
		return err
	}
	return a.ctl.call(ctx, http.MethodPut, wire.PathServicesReport, req)
}
