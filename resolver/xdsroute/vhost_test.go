package xdsroute

import (
	"context"
	"testing"
	"time"

	v3routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// The convert function of WatchVirtualHost sees the virtual host the
// authority selects, beside each of its routes.
func TestConvertSeesVirtualHost(t *testing.T) {
	rc := &v3routepb.RouteConfiguration{VirtualHosts: []*v3routepb.VirtualHost{
		{Name: "other", Domains: []string{"*"}, Routes: []*v3routepb.Route{route("a", prefix("/"))}},
		{Name: "reviews", Domains: []string{"reviews:9080"}, Routes: []*v3routepb.Route{route("b", prefix("/"))}},
	}}
	tb := &Table[string]{authority: "reviews:9080", ready: make(chan struct{}),
		convert: func(vh *v3routepb.VirtualHost, r *v3routepb.Route) string { return vh.GetName() + "/" + r.GetName() }}
	tb.install(rc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, got, _ := tb.Lookup(ctx, "/pkg.S/M", nil); got != "reviews/b" {
		t.Errorf("Lookup() value = %q, want %q", got, "reviews/b")
	}
}
