package xdsclient

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// FuzzDecode: arbitrary bytes as any resource type never panic the
// decoder; a resource it accepts has a name and round-trips.
//
//	go test -run XXX -fuzz FuzzDecode -fuzztime 10m ./internal/xdsclient/
func FuzzDecode(f *testing.F) {
	types := []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType, wrapperTypeURL}
	for i := range types {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), []byte{0x0a, 0x03, 'a', 'b', 'c'})
	}
	good, _ := proto.Marshal(edsCluster("good", 1e9))
	f.Add(uint8(2), good)
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		typeURL := types[int(which)%len(types)]
		for _, rt := range resourceTypes {
			name, msg, err := decode(rt, &anypb.Any{TypeUrl: typeURL, Value: data})
			if err != nil {
				continue
			}
			if name == "" || msg == nil {
				t.Fatalf("decode(%s) accepted a resource with name %q, message %v", rt.kind, name, msg)
			}
			b, err := proto.Marshal(msg)
			if err != nil {
				t.Fatalf("accepted %s does not marshal: %v", rt.kind, err)
			}
			again := rt.new()
			if err := proto.Unmarshal(b, again); err != nil || !proto.Equal(again, msg) {
				t.Fatalf("accepted %s does not round-trip", rt.kind)
			}
		}
	})
}
