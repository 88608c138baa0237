package xdsbootstrap

import (
	"encoding/json"
	"testing"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
)

// TestProtoMatchesBootstrap: the node Trellis's own xDS client sends is the
// node grpc-go reads from the bootstrap, so the control plane gives both the
// same per-client view.
func TestProtoMatchesBootstrap(t *testing.T) {
	n := Node{
		ID:       "trellis~host~1~ab",
		Cluster:  "reviews",
		Metadata: map[string]any{"NAMESPACE": "default", "LABELS": map[string]string{"app": "reviews", "version": "v2"}},
		Locality: "eu/eu-west-1a/rack7",
	}
	contents, err := Contents("127.0.0.1:15010", ChannelCreds{}, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		Node json.RawMessage `json:"node"`
	}
	if err := json.Unmarshal(contents, &b); err != nil {
		t.Fatal(err)
	}
	// The bootstrap spells sub_zone as gRPC's bootstrap does; the proto's
	// JSON name is subZone.
	want := &v3corepb.Node{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b.Node, want); err != nil {
		t.Fatalf("bootstrap node %s: %v", b.Node, err)
	}
	got, err := n.Proto()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, want, protocmp.Transform()); diff != "" {
		t.Errorf("Node.Proto() differs from the bootstrap's node (-got +want):\n%s", diff)
	}
}

// TestContentsListsReplicasAsOneServer: several control-plane replicas
// are one xds_servers entry whose server_uri lists them all (not A71
// fallback servers), and grpc-go accepts the bootstrap.
func TestContentsListsReplicasAsOneServer(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:15010", "127.0.0.1:15010"},
		{"cp-a:15010, cp-b:15010", "trellis-replicas:///cp-a:15010,cp-b:15010"},
		{"dns:///xds.example:15010", "dns:///xds.example:15010"},
	} {
		contents, err := Contents(tc.addr, ChannelCreds{}, Node{ID: "n"}, nil)
		if err != nil {
			t.Fatalf("Contents(%q) = %v", tc.addr, err)
		}
		var b bootstrap
		if err := json.Unmarshal(contents, &b); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range b.XDSServers {
			got = append(got, s.ServerURI)
		}
		if diff := cmp.Diff(got, []string{tc.want}); diff != "" {
			t.Errorf("Contents(%q) xds_servers (-got +want):\n%s", tc.addr, diff)
		}
		if _, err := Resolver(contents); err != nil {
			t.Errorf("Resolver(Contents(%q)) = %v", tc.addr, err)
		}
	}
	if _, err := Contents("cp-a:15010,cp-b", ChannelCreds{}, Node{}, nil); err == nil {
		t.Error(`Contents("cp-a:15010,cp-b") succeeded, want an error naming the bad replica`)
	}
}
