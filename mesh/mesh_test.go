package mesh

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestNewServerValidatesOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []ServerOption
		want string
	}{
		{"bad service", []ServerOption{WithService("Bad_Name", "v1")}, `mesh: service: "Bad_Name" is not a valid name`},
		{"bad namespace", []ServerOption{WithService("ok", "v1"), WithNamespace("x.y")}, `mesh: namespace: "x.y" is not a valid name`},
		{"bad version label", []ServerOption{WithService("ok", "v 1")}, `mesh: labels: label "version": "v 1" is not a valid label value`},
		{"bad advertise address", []ServerOption{WithService("ok", ""), WithAdvertiseAddr("host.local")}, `mesh: advertise address "host.local" is not an IP address`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(tc.opts...)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("NewServer() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestDialRejectsForeignSchemes(t *testing.T) {
	for _, target := range []string{"", "dns:///reviews:9080", "passthrough:///127.0.0.1:1"} {
		if cc, err := Dial(target, WithControlPlane("127.0.0.1:1")); err == nil {
			cc.Close()
			t.Errorf("Dial(%q) = nil error, want one", target)
		}
	}
	cc, err := Dial("xds:///reviews:9080", WithControlPlane("127.0.0.1:1"))
	if err != nil {
		t.Fatalf("Dial(xds:///reviews:9080) = %v", err)
	}
	cc.Close()
}

func TestControlPlaneAddress(t *testing.T) {
	t.Setenv(EnvControlPlane, "")
	t.Setenv("GRPC_XDS_BOOTSTRAP", "")
	t.Setenv("GRPC_XDS_BOOTSTRAP_CONFIG", "")
	if addr, std, _ := newOptions(nil, DialOption.applyDial).controlPlane(); addr != DefaultControlPlane || std {
		t.Errorf("default control plane = %q (standard %v), want %q", addr, std, DefaultControlPlane)
	}
	t.Setenv("GRPC_XDS_BOOTSTRAP_CONFIG", `{"xds_servers":[{"server_uri":"10.1.1.1:15010"}],"node":{"id":"n"}}`)
	if addr, std, _ := newOptions(nil, DialOption.applyDial).controlPlane(); addr != "10.1.1.1:15010" || !std {
		t.Errorf("with GRPC_XDS_BOOTSTRAP_CONFIG: control plane = %q (standard %v), want 10.1.1.1:15010 from the standard bootstrap", addr, std)
	}
	t.Setenv(EnvControlPlane, "10.2.2.2:15010")
	if addr, std, _ := newOptions(nil, DialOption.applyDial).controlPlane(); addr != "10.2.2.2:15010" || std {
		t.Errorf("with %s: control plane = %q (standard %v)", EnvControlPlane, addr, std)
	}
	if addr, _, _ := newOptions([]DialOption{WithControlPlane("10.3.3.3:1")}, DialOption.applyDial).controlPlane(); addr != "10.3.3.3:1" {
		t.Errorf("WithControlPlane: control plane = %q, want 10.3.3.3:1", addr)
	}
	t.Setenv(EnvControlPlane, "")
	t.Setenv("GRPC_XDS_BOOTSTRAP_CONFIG", `{not json`)
	if _, _, err := newOptions(nil, DialOption.applyDial).controlPlane(); err == nil || !strings.Contains(err.Error(), "parse bootstrap") {
		t.Errorf("with a broken bootstrap: err = %v, want a parse error", err)
	}
}

// TestServerWithoutControlPlane: a server whose control plane is down still
// serves, and Shutdown does not hang on the registration that never took.
func TestServerWithoutControlPlane(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	srv, err := NewServer(WithService("lonely", "v1"), WithControlPlane(deadAddr))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve() = %v, want ErrServerClosed", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("Close() after Shutdown = %v", err)
	}
	if err := srv.Serve(lis); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve() after Shutdown = %v, want ErrServerClosed", err)
	}
}

func TestAdvertisedIP(t *testing.T) {
	if got := advertisedIP(net.ParseIP("10.0.0.7")); got != "10.0.0.7" {
		t.Errorf("advertisedIP(10.0.0.7) = %q", got)
	}
	if got := advertisedIP(net.IPv4zero); net.ParseIP(got) == nil || net.ParseIP(got).IsUnspecified() {
		t.Errorf("advertisedIP(0.0.0.0) = %q, want a concrete IP", got)
	}
}

// TestControlPlaneReplicas: the control-plane address may list replicas;
// the CA is then each replica's secure port, and a malformed list is an
// error from Dial rather than a channel that never connects.
func TestControlPlaneReplicas(t *testing.T) {
	t.Setenv(EnvCAAddr, "")
	for _, tc := range []struct{ cp, wantCA string }{
		{"10.0.0.1:15010", "10.0.0.1:15012"},
		{"10.0.0.1:15010,10.0.0.2:15010", "10.0.0.1:15012,10.0.0.2:15012"},
		{"dns:///xds.example:15010", "dns:///xds.example:15012"},
	} {
		if got := newOptions([]DialOption{WithControlPlane(tc.cp)}, DialOption.applyDial).caAddress(); got != tc.wantCA {
			t.Errorf("WithControlPlane(%q): CA address %q, want %q", tc.cp, got, tc.wantCA)
		}
	}
	if got := newOptions([]DialOption{WithControlPlane("a:1,b:2"), WithCAAddr("c:3,d:4")}, DialOption.applyDial).caAddress(); got != "c:3,d:4" {
		t.Errorf("WithCAAddr(c:3,d:4): CA address %q, want it as given", got)
	}
	if cc, err := Dial("reviews:9080", WithControlPlane("10.0.0.1:15010,10.0.0.2")); err == nil {
		cc.Close()
		t.Error("Dial with the control plane 10.0.0.1:15010,10.0.0.2 succeeded, want an error naming the bad replica")
	} else if !strings.Contains(err.Error(), `"10.0.0.2"`) {
		t.Errorf("Dial with a bad replica list: %v, want the bad replica named", err)
	}
	cc, err := Dial("reviews:9080", WithControlPlane("127.0.0.1:1,127.0.0.1:2"))
	if err != nil {
		t.Fatalf("Dial with two replicas = %v", err)
	}
	cc.Close()
}
