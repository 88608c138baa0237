package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	istiotelemetry "istio.io/api/telemetry/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/trellismesh/trellis/internal/naming"
)

// apiVersions accepted for each kind.
var apiVersions = map[string][]string{
	KindServiceEntry:    {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"},
	KindWorkloadEntry:   {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"},
	KindVirtualService:  {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"},
	KindDestinationRule: {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"},

	KindPeerAuthentication:    {"security.istio.io/v1", "security.istio.io/v1beta1"},
	KindAuthorizationPolicy:   {"security.istio.io/v1", "security.istio.io/v1beta1"},
	KindRequestAuthentication: {"security.istio.io/v1", "security.istio.io/v1beta1"},
	KindTelemetry:             telemetryAPIVersions,
}

// document is one YAML document of a file.
type document struct {
	line int // first line of the document, 1-based
	data []byte
}

// splitDocuments splits a multi-document YAML stream at "---" lines.
func splitDocuments(data []byte) []document {
	var docs []document
	var cur bytes.Buffer
	start, line := 1, 0
	flush := func() {
		if len(bytes.TrimSpace(cur.Bytes())) > 0 {
			docs = append(docs, document{line: start, data: append([]byte(nil), cur.Bytes()...)})
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), len(data)+1)
	for sc.Scan() {
		line++
		text := sc.Text()
		if marker, rest, ok := documentMarker(text); ok {
			// "---" starts a document, "..." ends one; either may be
			// followed by a comment, and "---" by the document's first
			// node. Lines left in one chunk past a marker would be
			// silently dropped by the YAML decoder.
			flush()
			start = line + 1
			if marker == "---" && rest != "" && !strings.HasPrefix(rest, "#") {
				start = line
				cur.WriteString(rest)
				cur.WriteByte('\n')
			}
			continue
		}
		if cur.Len() == 0 && strings.TrimSpace(text) == "" {
			start = line + 1
			continue
		}
		cur.WriteString(text)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

// documentMarker reports whether text is a "---" or "..." marker line,
// returning the marker and the rest of the line, trimmed.
func documentMarker(text string) (marker, rest string, ok bool) {
	for _, m := range []string{"---", "..."} {
		if r, found := strings.CutPrefix(text, m); found && (r == "" || r[0] == ' ' || r[0] == '\t') {
			return m, strings.TrimSpace(r), true
		}
	}
	return "", "", false
}

// parseFile parses every document in one file into set.
func parseFile(set *Set, file string, data []byte) []error {
	var errs []error
	for _, doc := range splitDocuments(data) {
		if err := parseDocument(set, file, doc); err != nil {
			errs = append(errs, err...)
		}
	}
	return errs
}

func parseDocument(set *Set, file string, doc document) []error {
	fail := func(resource, field, format string, args ...any) []error {
		return []error{&Error{File: file, Line: doc.line, Resource: resource, Field: field, Msg: fmt.Sprintf(format, args...)}}
	}
	// Strict: a key given twice is an error, not last-one-wins.
	js, err := yaml.YAMLToJSONStrict(doc.data)
	if err != nil {
		return fail("", "", "invalid YAML: %v", err)
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil // a document holding only comments
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return fail("", "", "a resource must be a YAML mapping: %v", err)
	}
	meta := Meta{File: file, Line: doc.line, Namespace: DefaultNamespace}
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	if kind == "" {
		return fail("", "kind", "required")
	}
	meta.Kind = kind
	versions, ok := apiVersions[kind]
	if !ok {
		return fail("", "kind", "unsupported kind %q (supported: ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry)", kind)
	}
	if md, ok := obj["metadata"].(map[string]any); ok {
		meta.Name, _ = md["name"].(string)
		if ns, _ := md["namespace"].(string); ns != "" {
			meta.Namespace = ns
		}
	}
	resource := kind + " " + meta.Namespace + "/" + meta.Name
	if meta.Name == "" {
		resource = kind + " " + meta.Namespace + "/?"
	}
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &Error{File: file, Line: doc.line, Resource: resource, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	for key := range obj {
		switch key {
		case "apiVersion", "kind", "metadata", "spec":
		case "status":
			// Written back by Kubernetes; carries no configuration.
		default:
			add(key, "unknown field")
		}
	}
	found := false
	for _, v := range versions {
		found = found || v == apiVersion
	}
	if !found {
		add("apiVersion", "%q is not an API version of %s (want one of %s)", apiVersion, kind, strings.Join(versions, ", "))
	}
	errs = append(errs, parseMetadata(&meta, obj["metadata"], add)...)
	spec, ok := obj["spec"].(map[string]any)
	if !ok {
		add("spec", "required, and must be a mapping")
		return errs
	}
	var msg proto.Message
	switch kind {
	case KindServiceEntry:
		m := &networking.ServiceEntry{}
		set.ServiceEntries = append(set.ServiceEntries, &ServiceEntry{Meta: meta, Spec: m})
		msg = m
	case KindWorkloadEntry:
		m := &networking.WorkloadEntry{}
		set.WorkloadEntries = append(set.WorkloadEntries, &WorkloadEntry{Meta: meta, Spec: m})
		msg = m
	case KindVirtualService:
		m := &networking.VirtualService{}
		set.VirtualServices = append(set.VirtualServices, &VirtualService{Meta: meta, Spec: m})
		msg = m
	case KindDestinationRule:
		m := &networking.DestinationRule{}
		set.DestinationRules = append(set.DestinationRules, &DestinationRule{Meta: meta, Spec: m})
		msg = m
	case KindPeerAuthentication:
		m := &security.PeerAuthentication{}
		set.PeerAuthentications = append(set.PeerAuthentications, &PeerAuthentication{Meta: meta, Spec: m})
		msg = m
	case KindAuthorizationPolicy:
		m := &security.AuthorizationPolicy{}
		set.AuthorizationPolicies = append(set.AuthorizationPolicies, &AuthorizationPolicy{Meta: meta, Spec: m})
		msg = m
	case KindRequestAuthentication:
		m := &security.RequestAuthentication{}
		set.RequestAuthentications = append(set.RequestAuthentications, &RequestAuthentication{Meta: meta, Spec: m})
		msg = m
	case KindTelemetry:
		m := &istiotelemetry.Telemetry{}
		set.Telemetries = append(set.Telemetries, &Telemetry{Meta: meta, Spec: m})
		msg = m
		telemetrySpec(spec, add)
	}
	before := len(errs)
	// Istio's Location enum has MESH_EXTERNAL as its zero value, so only the
	// document tells an explicit MESH_EXTERNAL from an omitted location.
	if loc := fmt.Sprint(spec["location"]); kind == KindServiceEntry && (loc == "MESH_EXTERNAL" || loc == "0") {
		add("spec.location", "MESH_EXTERNAL is not supported: ServiceEntries describe services inside the mesh")
	}
	if kind == KindDestinationRule {
		// A tls block without a mode would mean DISABLE (the enum's zero
		// value): plaintext must be asked for, never implied.
		tlsWithoutMode(spec, "spec", add)
	}
	walkFields(msg.ProtoReflect().Descriptor(), spec, "spec", "", supported[kind], add)
	if len(errs) > before {
		return errs
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		add("spec", "%v", err)
		return errs
	}
	if err := protojson.Unmarshal(specJSON, msg); err != nil {
		add("spec", "%s", protoErrorText(err))
	}
	return errs
}

func parseMetadata(meta *Meta, v any, add func(field, format string, args ...any)) []error {
	md, ok := v.(map[string]any)
	if !ok {
		add("metadata", "required, and must be a mapping")
		return nil
	}
	for key, val := range md {
		field := "metadata." + key
		switch key {
		case "name":
			if s, _ := val.(string); s == "" {
				add(field, "required")
			} else if !naming.IsDNS1123Subdomain(s) {
				add(field, "%q is not a valid name (lowercase letters, digits, '-' and '.')", s)
			}
		case "namespace":
			if s, ok := val.(string); !ok || !naming.IsDNS1123Label(s) {
				add(field, "%q is not a valid namespace", fmt.Sprint(val))
			}
		case "labels", "annotations":
			m, ok := val.(map[string]any)
			if !ok {
				add(field, "must be a mapping of strings")
				continue
			}
			out := make(map[string]string, len(m))
			for k, x := range m {
				s, ok := x.(string)
				if !ok {
					add(field+"["+quote(k)+"]", "must be a string")
					continue
				}
				out[k] = s
			}
			if key == "labels" {
				meta.Labels = out
			} else {
				meta.Annotations = out
				checkTrellisAnnotations(meta.Kind, out, add)
				checkIstioAnnotations(meta.Kind, out, add)
			}
		case "resourceVersion", "uid", "generation", "creationTimestamp", "managedFields":
			// Kubernetes bookkeeping; carries no configuration.
		default:
			add(field, "unknown field")
		}
	}
	if _, ok := md["name"]; !ok {
		add("metadata.name", "required")
	}
	return nil
}

// protoErrorPrefix matches what protojson puts before its message: "proto:"
// and a space that is deliberately either U+0020 or U+00A0 (varying between
// builds), then the position in the JSON that Load made from the YAML, which
// would only mislead.
var protoErrorPrefix = regexp.MustCompile(`^proto:[ \x{a0}]+((syntax error )?\(line \d+:\d+\):[ \x{a0}]*)?`)

func protoErrorText(err error) string {
	return protoErrorPrefix.ReplaceAllString(err.Error(), "")
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

// tlsWithoutMode reports every traffic policy's tls block in a
// DestinationRule spec (service, subset and port levels) that has no mode.
func tlsWithoutMode(spec map[string]any, path string, add func(field, format string, args ...any)) {
	check := func(v any, path string) {
		m, _ := v.(map[string]any)
		if tls, ok := m["tls"].(map[string]any); ok && tls["mode"] == nil {
			add(path+".tls.mode", "required: ISTIO_MUTUAL or DISABLE")
		}
	}
	policy := func(v any, path string) {
		check(v, path)
		tp, _ := v.(map[string]any)
		for _, key := range []string{"portLevelSettings", "port_level_settings"} {
			l, _ := tp[key].([]any)
			for i, x := range l {
				check(x, path+"."+key+"["+itoa(i)+"]")
			}
		}
	}
	for _, key := range []string{"trafficPolicy", "traffic_policy"} {
		policy(spec[key], path+"."+key)
	}
	subsets, _ := spec["subsets"].([]any)
	for i, x := range subsets {
		m, _ := x.(map[string]any)
		for _, key := range []string{"trafficPolicy", "traffic_policy"} {
			policy(m[key], path+".subsets["+itoa(i)+"]."+key)
		}
	}
}
