package identity

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// WorkloadSource is an identity Source fed by a SPIFFE Workload API (a
// SPIRE agent, for instance): a thin shell over go-spiffe's
// workloadapi.X509Source that adds the TLS views and Changed.
//
// A WorkloadSource is safe for concurrent use.
type WorkloadSource struct {
	*state
	x509      *workloadapi.X509Source
	cfg       config
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// NewWorkloadSource connects to the Workload API at addr ("unix:///path"
// or "tcp://ip:port"). It blocks until the first SVID arrives or ctx is
// done. Close stops it.
func NewWorkloadSource(ctx context.Context, addr string, opts ...Option) (*WorkloadSource, error) {
	cfg := newConfig(opts)
	x, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(
		workloadapi.WithAddr(addr),
		workloadapi.WithLogger(spiffeLogger{cfg.log}),
	))
	if err != nil {
		return nil, fmt.Errorf("identity: workload API %s: %w", addr, err)
	}
	s := &WorkloadSource{state: newState(), x509: x, cfg: cfg, stop: make(chan struct{}), done: make(chan struct{})}
	if err := s.refresh(); err != nil {
		x.Close()
		return nil, err
	}
	go s.run()
	return s, nil
}

// Close closes the Workload API connection and waits for the source's
// goroutine. Afterwards the source's methods return ErrClosed.
func (s *WorkloadSource) Close() error {
	s.closeOnce.Do(func() {
		s.state.close()
		close(s.stop)
		<-s.done
		s.closeErr = s.x509.Close()
	})
	return s.closeErr
}

func (s *WorkloadSource) run() {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		case <-s.x509.Updated():
			if err := s.refresh(); err != nil {
				s.cfg.log.Warn("identity: workload API update refused, keeping current SVID", "err", err)
			}
		}
	}
}

func (s *WorkloadSource) refresh() error {
	svid, err := s.x509.GetX509SVID()
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	bundle, err := s.x509.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(timeNow())); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}
	return s.state.set(svid, x509bundle.NewSet(bundle))
}

// GetX509BundleForTrustDomain implements x509bundle.Source, federated
// trust domains included.
func (s *WorkloadSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if _, err := s.state.GetX509SVID(); err != nil {
		return nil, err
	}
	return s.x509.GetX509BundleForTrustDomain(td)
}

// spiffeLogger adapts slog to go-spiffe's logger.Logger.
type spiffeLogger struct{ l *slog.Logger }

func (g spiffeLogger) Debugf(format string, args ...any) { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g spiffeLogger) Infof(format string, args ...any)  { g.l.Info(fmt.Sprintf(format, args...)) }
func (g spiffeLogger) Warnf(format string, args ...any)  { g.l.Warn(fmt.Sprintf(format, args...)) }
func (g spiffeLogger) Errorf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
