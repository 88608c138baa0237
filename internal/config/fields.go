package config

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// supported lists, per kind, the spec fields Trellis implements, as dotted
// paths of proto field names without list indexes or map keys. A field that
// is present in a resource but not listed here is rejected.
var supported = map[string]map[string]bool{
	KindServiceEntry: set(
		"hosts",
		"ports", "ports.number", "ports.protocol", "ports.name", "ports.target_port",
		"location", "resolution",
		"endpoints", "endpoints.address", "endpoints.ports", "endpoints.labels", "endpoints.locality",
		"endpoints.service_account",
		"workload_selector", "workload_selector.labels",
		"subject_alt_names",
	),
	KindWorkloadEntry: set("address", "ports", "labels", "locality", "service_account"),
	KindVirtualService: set(
		"hosts",
		"http", "http.name",
		"http.match", "http.match.name", "http.match.port", "http.match.ignore_uri_case", "http.match.source_labels",
		"http.match.uri", "http.match.uri.exact", "http.match.uri.prefix", "http.match.uri.regex",
		"http.match.headers", "http.match.headers.exact", "http.match.headers.prefix", "http.match.headers.regex",
		"http.timeout",
		"http.retries", "http.retries.attempts", "http.retries.retry_on", "http.retries.backoff", "http.retries.per_try_timeout",
		"http.fault",
		"http.fault.delay", "http.fault.delay.fixed_delay", "http.fault.delay.percentage", "http.fault.delay.percentage.value",
		"http.fault.abort", "http.fault.abort.http_status", "http.fault.abort.grpc_status", "http.fault.abort.percentage", "http.fault.abort.percentage.value",
		"http.route", "http.route.weight",
		"http.route.destination", "http.route.destination.host", "http.route.destination.subset",
		"http.route.destination.port", "http.route.destination.port.number",
	),
	KindDestinationRule: destinationRuleFields(),
	KindTelemetry:       telemetryFields(),
	KindPeerAuthentication: set(
		"selector", "selector.match_labels",
		"mtls", "mtls.mode",
		"port_level_mtls", "port_level_mtls.mode",
	),
	KindAuthorizationPolicy: set(
		"selector", "selector.match_labels",
		"action",
		"rules",
		"rules.from", "rules.from.source",
		"rules.from.source.principals", "rules.from.source.not_principals",
		"rules.from.source.request_principals", "rules.from.source.not_request_principals",
		"rules.from.source.namespaces", "rules.from.source.not_namespaces",
		"rules.from.source.service_accounts", "rules.from.source.not_service_accounts",
		"rules.from.source.ip_blocks", "rules.from.source.not_ip_blocks",
		"rules.from.source.remote_ip_blocks", "rules.from.source.not_remote_ip_blocks",
		"rules.to", "rules.to.operation",
		"rules.to.operation.ports", "rules.to.operation.not_ports",
		"rules.to.operation.methods", "rules.to.operation.not_methods",
		"rules.to.operation.paths", "rules.to.operation.not_paths",
		"rules.when", "rules.when.key", "rules.when.values", "rules.when.not_values",
	),
	KindRequestAuthentication: set(
		"selector", "selector.match_labels",
		"jwt_rules", "jwt_rules.issuer", "jwt_rules.audiences",
		"jwt_rules.jwks_uri", "jwt_rules.jwks", "jwt_rules.timeout",
		"jwt_rules.from_headers", "jwt_rules.from_headers.name", "jwt_rules.from_headers.prefix",
		"jwt_rules.from_params", "jwt_rules.output_payload_to_header", "jwt_rules.forward_original_token",
	),
}

// trafficPolicyFields are the TrafficPolicy fields Trellis implements, at
// every level a TrafficPolicy appears (service, subset, and the port-level
// settings of each).
var trafficPolicyFields = []string{
	"load_balancer", "load_balancer.simple",
	"load_balancer.consistent_hash", "load_balancer.consistent_hash.http_header_name",
	"load_balancer.consistent_hash.use_source_ip", "load_balancer.consistent_hash.ring_hash",
	"load_balancer.consistent_hash.ring_hash.minimum_ring_size",
	"load_balancer.locality_lb_setting", "load_balancer.locality_lb_setting.enabled",
	"load_balancer.locality_lb_setting.distribute", "load_balancer.locality_lb_setting.distribute.from",
	"load_balancer.locality_lb_setting.distribute.to",
	"load_balancer.locality_lb_setting.failover", "load_balancer.locality_lb_setting.failover.from",
	"load_balancer.locality_lb_setting.failover.to",
	"connection_pool", "connection_pool.http", "connection_pool.http.http2_max_requests",
	"connection_pool.http.max_requests_per_connection",
	"outlier_detection", "outlier_detection.consecutive_5xx_errors", "outlier_detection.consecutive_gateway_errors",
	"outlier_detection.interval", "outlier_detection.base_ejection_time",
	"outlier_detection.max_ejection_percent", "outlier_detection.min_health_percent",
	"tls", "tls.mode", "tls.subject_alt_names",
}

func destinationRuleFields() map[string]bool {
	m := set("host", "subsets", "subsets.name", "subsets.labels")
	for _, level := range []string{"traffic_policy", "subsets.traffic_policy"} {
		m[level] = true
		m[level+".port_level_settings"] = true
		m[level+".port_level_settings.port"] = true
		m[level+".port_level_settings.port.number"] = true
		for _, f := range trafficPolicyFields {
			m[level+"."+f] = true
			m[level+".port_level_settings."+f] = true
		}
	}
	return m
}

func set(paths ...string) map[string]bool {
	m := make(map[string]bool, len(paths))
	for _, p := range paths {
		m[p] = true
	}
	return m
}

// Supported returns the spec fields of kind that Trellis implements, as
// sorted dotted paths of proto field names ("http.route.destination.subset").
// Every other field of the kind is rejected.
func Supported(kind string) []string {
	var out []string
	for p := range supported[kind] {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// walkFields checks a decoded JSON object against a message descriptor:
// every key must be a field of the message (by JSON or proto name) and the
// field's schema path must be supported. It recurses into messages, lists
// and maps of messages, and checks enum names.
func walkFields(md protoreflect.MessageDescriptor, v any, path, schema string, allowed map[string]bool, add func(field, format string, args ...any)) {
	obj, ok := v.(map[string]any)
	if !ok {
		if v != nil {
			add(path, "must be a mapping")
		}
		return
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		val := obj[key]
		fpath := path + "." + key
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByTextName(key)
		}
		if fd == nil {
			add(fpath, "unknown field")
			continue
		}
		fschema := string(fd.Name())
		if schema != "" {
			fschema = schema + "." + fschema
		}
		if !allowed[fschema] {
			add(fpath, "field not supported by Trellis (see docs/SUPPORT.md)")
			continue
		}
		if val == nil {
			continue
		}
		if isDuration(fd) && !fd.IsList() && !fd.IsMap() {
			// Istio accepts Go durations ("100ms", "1m"); protojson only
			// decimal seconds ("0.1s").
			str, ok := val.(string)
			d, err := time.ParseDuration(str)
			if !ok || err != nil {
				add(fpath, "%v is not a duration such as \"1.5s\", \"100ms\" or \"1m\"", quoteValue(val))
				continue
			}
			obj[key] = strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
			continue
		}
		switch {
		case fd.IsMap():
			m, ok := val.(map[string]any)
			if !ok {
				add(fpath, "must be a mapping")
				continue
			}
			vd := fd.MapValue()
			for k, x := range m {
				walkValue(vd, x, fpath+"["+quote(k)+"]", fschema, allowed, add)
			}
		case fd.IsList():
			l, ok := val.([]any)
			if !ok {
				add(fpath, "must be a list")
				continue
			}
			for i, x := range l {
				walkValue(fd, x, fpath+"["+itoa(i)+"]", fschema, allowed, add)
			}
		default:
			walkValue(fd, val, fpath, fschema, allowed, add)
		}
	}
}

// walkValue checks one value of field fd (an element, for lists and maps).
func walkValue(fd protoreflect.FieldDescriptor, v any, path, schema string, allowed map[string]bool, add func(field, format string, args ...any)) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		md := fd.Message()
		if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
			return // well-known types have their own JSON forms; protojson checks them
		}
		walkFields(md, v, path, schema, allowed, add)
	case protoreflect.StringKind, protoreflect.BytesKind:
		if _, ok := v.(string); !ok {
			add(path, "%s must be a string", quoteValue(v))
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			add(path, "%s must be true or false", quoteValue(v))
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if _, err := strconv.ParseInt(numberText(v), 10, bitSize(fd.Kind())); err != nil {
			add(path, "%s must be a whole number", quoteValue(v))
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if _, err := strconv.ParseUint(numberText(v), 10, bitSize(fd.Kind())); err != nil {
			add(path, "%s must be a non-negative whole number", quoteValue(v))
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if _, err := strconv.ParseFloat(numberText(v), 64); err != nil {
			add(path, "%s must be a number", quoteValue(v))
		}
	case protoreflect.EnumKind:
		s, ok := v.(string)
		if !ok {
			if _, num := v.(json.Number); !num {
				add(path, "must be one of %s", enumNames(fd.Enum()))
			}
			return
		}
		if fd.Enum().Values().ByName(protoreflect.Name(s)) == nil {
			add(path, "%q is not one of %s", s, enumNames(fd.Enum()))
		}
	}
}

// numberText returns the text of a JSON number, or of a string (protojson
// accepts quoted numbers), and "" for anything else.
func numberText(v any) string {
	switch n := v.(type) {
	case json.Number:
		return string(n)
	case string:
		return n
	}
	return ""
}

func bitSize(k protoreflect.Kind) int {
	switch k {
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return 64
	}
	return 32
}

func isDuration(fd protoreflect.FieldDescriptor) bool {
	return fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Duration"
}

func quoteValue(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	var names []string
	for i := 0; i < ed.Values().Len(); i++ {
		names = append(names, string(ed.Values().Get(i).Name()))
	}
	return strings.Join(names, ", ")
}
