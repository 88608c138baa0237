package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	"sigs.k8s.io/yaml"
)

// rejectedField is a field of an Istio type that Trellis does not implement,
// reached through supported fields only.
type rejectedField struct {
	schema string // proto-name path, as in the allowlist
	doc    any    // a spec setting it (and the fields on the way to it)
	path   string // the error path, with list indexes and JSON names
}

// rejectedFields lists every unsupported field of md reachable from the
// supported fields under prefix.
func rejectedFields(md protoreflect.MessageDescriptor, schema, path string, allowed map[string]bool, wrap func(any) any) []rejectedField {
	var out []rejectedField
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		s := string(fd.Name())
		if schema != "" {
			s = schema + "." + s
		}
		p := path + "." + fd.JSONName()
		if !allowed[s] {
			out = append(out, rejectedField{schema: s, doc: wrap(map[string]any{fd.JSONName(): placeholder(fd)}), path: p})
			continue
		}
		if fd.Kind() != protoreflect.MessageKind {
			continue
		}
		var child protoreflect.MessageDescriptor
		var inner func(any) any
		name := fd.JSONName()
		switch {
		case fd.IsMap():
			child = fd.MapValue().Message()
			inner = func(v any) any { return wrap(map[string]any{name: map[string]any{"k": v}}) }
			p += `["k"]`
		case fd.IsList():
			child = fd.Message()
			inner = func(v any) any { return wrap(map[string]any{name: []any{v}}) }
			p += "[0]"
		default:
			child = fd.Message()
			inner = func(v any) any { return wrap(map[string]any{name: v}) }
		}
		if child == nil || strings.HasPrefix(string(child.FullName()), "google.protobuf.") {
			continue
		}
		out = append(out, rejectedFields(child, s, p, allowed, inner)...)
	}
	return out
}

// placeholder is a value of the field's type; its content does not matter,
// the field is rejected before its value is looked at.
func placeholder(fd protoreflect.FieldDescriptor) any {
	var v any
	switch fd.Kind() {
	case protoreflect.MessageKind:
		v = map[string]any{}
	case protoreflect.BoolKind:
		v = true
	case protoreflect.StringKind, protoreflect.EnumKind:
		v = "x"
	default:
		v = 1
	}
	switch {
	case fd.IsMap():
		return map[string]any{"k": v}
	case fd.IsList():
		return []any{v}
	}
	return v
}

// TestEveryRejectedFieldIsNamed loads, for every field of every supported
// kind that Trellis does not implement, a resource setting just that field,
// and checks the error names the file, resource and field.
func TestEveryRejectedFieldIsNamed(t *testing.T) {
	kinds := map[string]protoreflect.MessageDescriptor{
		KindServiceEntry:          (&networking.ServiceEntry{}).ProtoReflect().Descriptor(),
		KindWorkloadEntry:         (&networking.WorkloadEntry{}).ProtoReflect().Descriptor(),
		KindVirtualService:        (&networking.VirtualService{}).ProtoReflect().Descriptor(),
		KindDestinationRule:       (&networking.DestinationRule{}).ProtoReflect().Descriptor(),
		KindPeerAuthentication:    (&security.PeerAuthentication{}).ProtoReflect().Descriptor(),
		KindAuthorizationPolicy:   (&security.AuthorizationPolicy{}).ProtoReflect().Descriptor(),
		KindRequestAuthentication: (&security.RequestAuthentication{}).ProtoReflect().Descriptor(),
	}
	total := 0
	for kind, md := range kinds {
		fields := rejectedFields(md, "", "spec", supported[kind], func(v any) any { return v })
		// PeerAuthentication has no field Trellis leaves out.
		if len(fields) < 2 && kind != KindPeerAuthentication {
			t.Errorf("%s: only %d rejected fields found", kind, len(fields))
		}
		for _, f := range fields {
			total++
			apiVersion := "networking.istio.io/v1"
			if strings.HasPrefix(string(md.FullName()), "istio.security.") {
				apiVersion = "security.istio.io/v1"
			}
			doc := map[string]any{
				"apiVersion": apiVersion,
				"kind":       kind,
				"metadata":   map[string]any{"name": "r"},
				"spec":       f.doc,
			}
			js, _ := json.Marshal(doc)
			y, err := yaml.JSONToYAML(js)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Load(map[string][]byte{"f.yaml": y})
			want := fmt.Sprintf("f.yaml:1: %s default/r: %s: field not supported by Trellis (see docs/SUPPORT.md)", kind, f.path)
			found := false
			for _, e := range Errors(err) {
				found = found || e.Error() == want
			}
			if !found {
				t.Errorf("%s %s: Load = %v\nwant an error %q", kind, f.schema, err, want)
			}
		}
	}
	t.Logf("%d rejected fields checked", total)
}
