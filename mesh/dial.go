package mesh

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/resolver"

	"github.com/trellismesh/trellis/internal/meshcert"
	"github.com/trellismesh/trellis/internal/xdsbootstrap"

	// The LB policies the control plane selects through xDS custom LB.
	_ "github.com/trellismesh/trellis/balancer/ewma"
	_ "github.com/trellismesh/trellis/balancer/outlier"
	_ "github.com/trellismesh/trellis/balancer/random"
	_ "github.com/trellismesh/trellis/balancer/recycle"
)

// Dial returns a client connection to a mesh service. target is "NAME:PORT"
// or "NAME" (a service with a single port), as the control plane names its
// listeners; an "xds:///" target is accepted as well. Dial never blocks: the
// connection resolves routes and endpoints from the control plane in the
// background, and RPCs wait for them (or fail) as with grpc.NewClient.
//
// The connection uses grpc-go's own xDS client with a bootstrap built from
// the options (see WithControlPlane), so routing, weighted splits and
// endpoint updates follow the control plane as for any proxyless gRPC
// client.
//
// Calls are retried by the mesh's retry engine (package retry) with the
// retry policy and timeout of the route each call takes, per-try timeouts
// included; grpc-go's own retry is off so the two never compound. With a
// standard GRPC_XDS_BOOTSTRAP file and no WithControlPlane, grpc-go's retry
// is used instead.
//
// Connections use mutual TLS where the control plane says so (a
// DestinationRule with tls.mode ISTIO_MUTUAL, or automatic mTLS toward
// servers with identities), presenting the process's workload identity (see
// WithJoinToken) and accepting only the SPIFFE IDs the control plane names
// for the destination; elsewhere they are plaintext. A process without an
// identity fails calls that need mTLS rather than fall back to plaintext.
func Dial(target string, opts ...DialOption) (*grpc.ClientConn, error) {
	o := newOptions(opts, DialOption.applyDial)
	if target == "" {
		return nil, fmt.Errorf("mesh: empty target")
	}
	uri := target
	if !strings.Contains(target, "://") {
		uri = "xds:///" + target
	} else if !strings.HasPrefix(target, "xds:///") {
		return nil, fmt.Errorf("mesh: target %q: want NAME:PORT, NAME or xds:///NAME:PORT", target)
	}
	_, standard, err := o.controlPlane()
	if err != nil {
		return nil, err
	}
	// grpc-go's xDS credentials: TLS as each cluster's security config says,
	// plaintext where it says nothing.
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	tel, err := o.newTelemetry()
	if err != nil {
		return nil, err
	}
	telOuter, telInner := clientTelemetry(tel)
	dialOpts = append(dialOpts, telOuter...)
	// grpc-go's xDS client and balancers report what they measure (NACKed
	// resources, ejections) through the channel's metrics recorders.
	dialOpts = append(dialOpts, tel.ComponentMetrics()...)
	var releases []func()
	release := func() {
		for _, r := range releases {
			r()
		}
	}
	if !standard {
		id := o.acquireIdentity()
		releases = append(releases, func() { releaseIdentity(id) })
		link, err := o.link(id)
		if err != nil {
			release()
			return nil, err
		}
		builder, err := o.resolverBuilder(link, id)
		if err != nil {
			release()
			return nil, err
		}
		dialOpts = append(dialOpts, grpc.WithResolvers(builder))
		routeOpts, rel, err := o.routeInterceptors(link, strings.TrimPrefix(uri, "xds:///"), tel)
		if err != nil {
			release()
			return nil, fmt.Errorf("mesh: dial %s: %w", target, err)
		}
		releases = append(releases, rel)
		dialOpts = append(dialOpts, routeOpts...)
	}
	dialOpts = append(dialOpts, telInner...)
	dialOpts = append(dialOpts, o.dialOptions...)
	cc, err := grpc.NewClient(uri, dialOpts...)
	if err != nil {
		release()
		return nil, fmt.Errorf("mesh: dial %s: %w", target, err)
	}
	if len(releases) > 0 {
		go func() { // release what the connection used once it is closed
			for s := cc.GetState(); s != connectivity.Shutdown; s = cc.GetState() {
				cc.WaitForStateChange(context.Background(), s)
			}
			release()
		}()
	}
	return cc, nil
}

// controlPlane returns the control-plane address and whether the process-wide
// standard bootstrap is to be used instead of one built here.
func (o *options) controlPlane() (addr string, standard bool, err error) {
	if addr := o.explicitControlPlane(); addr != "" {
		return addr, false, nil
	}
	addr, ok, err := xdsbootstrap.FromEnv()
	if err != nil {
		return "", false, fmt.Errorf("mesh: %w", err)
	}
	if ok {
		return addr, true, nil
	}
	return DefaultControlPlane, false, nil
}

// resolverBuilder returns the xDS resolver builder for the options and the
// link to the control plane.
func (o *options) resolverBuilder(link controlPlaneLink, id *workloadIdentity) (resolver.Builder, error) {
	key := ""
	if id != nil {
		key = id.key
	}
	certs := &xdsbootstrap.CertPlugin{Name: meshcert.PluginName, Config: map[string]any{"source": key}}
	contents, err := xdsbootstrap.Contents(link.addr, link.bootstrapCreds(), o.node(), certs)
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	b, err := xdsbootstrap.Resolver(contents)
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}
	return b, nil
}

// node describes the client to the control plane. LABELS are the client
// workload's labels, which VirtualService sourceLabels match: those given by
// WithLabels, version from WithService, and app, the service name, as
// Kubernetes workloads in an Istio mesh carry them.
func (o *options) node() xdsbootstrap.Node {
	md := map[string]any{"NAMESPACE": o.namespace}
	labels := o.endpointLabels()
	if o.service != "" {
		md["SERVICE"] = o.service
		if _, ok := labels["app"]; !ok {
			labels["app"] = o.service
		}
	}
	if o.version != "" {
		md["VERSION"] = o.version
	}
	if len(labels) > 0 {
		md["LABELS"] = labels
	}
	return xdsbootstrap.Node{Cluster: o.service, Metadata: md, Locality: o.locality}
}
