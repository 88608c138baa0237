package translate

import (
	v3clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// reportLoad asks clients of c to report its load (LRS,
// envoy.service.load_stats.v3) to the control plane that served them the
// cluster: lrs_server is a "self" config source, the only kind grpc-go
// accepts (gRFC A27). grpc-go then reports, per cluster and locality, the
// requests issued, succeeded, failed and in progress; Trellis's HTTP client
// reports the same over its own LRS stream.
func reportLoad(c *v3clusterpb.Cluster) {
	c.LrsServer = &v3corepb.ConfigSource{
		ConfigSourceSpecifier: &v3corepb.ConfigSource_Self{Self: &v3corepb.SelfConfigSource{}},
	}
}
