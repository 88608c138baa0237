package xdsserver

import (
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellismesh/trellis/internal/ratelimit"
)

// Defaults of the admission limit on new xDS streams.
const (
	DefaultStreamAdmissionRate  = 500
	DefaultStreamAdmissionBurst = 500
)

// WithStreamAdmission limits how fast the Server accepts new xDS streams:
// a token bucket of burst streams refilled at rate a second. A stream
// beyond it fails at once with UNAVAILABLE, and the client tries again
// after its jittered backoff (grpc-go's and Trellis's xDS clients both back
// off), so a herd of clients reconnecting after a restart is spread out
// instead of landing on the control plane at once. Streams already open
// are never affected. If not given, 500 a second with a burst of 500; a
// rate of zero or less turns admission off.
func WithStreamAdmission(rate, burst int) Option {
	return optionFunc(func(o *options) { o.admission, o.admissionBurst, o.admissionSet = rate, burst, true })
}

// admission returns the stream interceptor that applies the admission
// limit to ADS streams, or nil if there is none.
func (s *Server) admission() grpc.StreamServerInterceptor {
	rate, burst := DefaultStreamAdmissionRate, DefaultStreamAdmissionBurst
	if s.opts.admissionSet {
		rate, burst = s.opts.admission, s.opts.admissionBurst
	}
	if rate <= 0 {
		return nil
	}
	lim := ratelimit.Limit{Rate: float64(rate), Burst: max(burst, 1)}
	limiter := ratelimit.New(ratelimit.WithMaxKeys(1))
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if strings.HasPrefix(info.FullMethod, "/envoy.service.discovery.v3.AggregatedDiscoveryService/") && !limiter.Allow("ads", lim) {
			s.metrics.admissionRejected.Inc()
			return status.Error(codes.Unavailable, "control plane busy: try again after backing off")
		}
		return h(srv, ss)
	}
}

// admissionOptions are the server options that install the admission
// limit (one bucket for both ports), if any.
func (s *Server) admissionOptions() []grpc.ServerOption {
	if s.admit != nil {
		return []grpc.ServerOption{grpc.ChainStreamInterceptor(s.admit)}
	}
	return nil
}
