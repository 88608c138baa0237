package telemetry

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// TestIdleUntilSDKInstalled: a Telemetry on the global providers does no
// work — its interceptor passes the call through untouched, sending no
// header — until the application installs an SDK; one given providers, or
// an access log, is active from the start. The global providers are
// process-wide, so the check runs in a child process of its own.
func TestIdleUntilSDKInstalled(t *testing.T) {
	if os.Getenv("TELEMETRY_IDLE_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestIdleUntilSDKInstalled$", "-test.v")
		cmd.Env = append(os.Environ(), "TELEMETRY_IDLE_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}
	tel, err := New(WithWorkload(Workload{Service: "frontend"}))
	if err != nil {
		t.Fatal(err)
	}
	if tel.Active() {
		t.Fatal("Active() = true with no SDK installed, want idle")
	}
	cc, err := grpc.NewClient("passthrough:///backend", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var sent metadata.MD
	invoker := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ grpc.UnaryInvoker, _ ...grpc.CallOption) error {
		sent, _ = metadata.FromOutgoingContext(ctx)
		return nil
	}
	call := func() {
		err := tel.UnaryAttemptInterceptor()(context.Background(), "/s/m", nil, nil, cc, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, opts ...grpc.CallOption) error {
			return invoker(ctx, method, req, reply, cc, nil, opts...)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	call()
	if len(sent[PeerHeader]) != 0 {
		t.Errorf("idle telemetry sent %s: %v", PeerHeader, sent)
	}
	logged, err := New(WithAccessLog(AccessLog{Mode: AccessLogOn}))
	if err != nil {
		t.Fatal(err)
	}
	given, err := New(WithMeterProvider(sdkmetric.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	if !logged.Active() || !given.Active() {
		t.Errorf("Active() with an access log = %v, with a MeterProvider = %v; want both true", logged.Active(), given.Active())
	}

	mp := sdkmetric.NewMeterProvider()
	defer mp.Shutdown(context.Background())
	otel.SetMeterProvider(mp)
	if !tel.Active() {
		t.Fatal("Active() = false after otel.SetMeterProvider, want true")
	}
	call()
	if len(sent[PeerHeader]) != 1 {
		t.Errorf("active telemetry sent no %s: %v", PeerHeader, sent)
	}
}
