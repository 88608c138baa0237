package config

import (
	istiotelemetry "istio.io/api/telemetry/v1alpha1"
)

// KindTelemetry is Istio's Telemetry resource (telemetry.istio.io/v1).
const KindTelemetry = "Telemetry"

// Telemetry is a parsed Telemetry resource.
//
// The loader accepts the kind so that a file written for Istio loads with
// a clear answer, but it accepts only its selector: the settings Trellis
// could honour (accessLogging.disabled and match.mode,
// tracing.randomSamplingPercentage) are not yet carried from the control
// plane to workloads, and a setting accepted but not applied would be
// ignored silently. Workloads set their access log and sampling in code
// (mesh.WithTelemetry with telemetry.WithAccessLog, and the sampler of
// their TracerProvider). Every other field is rejected as well.
type Telemetry struct {
	Meta
	Spec *istiotelemetry.Telemetry
}

// telemetryAPIVersions are the API versions of KindTelemetry.
var telemetryAPIVersions = []string{"telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"}

// telemetryFields are the spec fields of a Telemetry the loader accepts.
func telemetryFields() map[string]bool { return set("selector", "selector.match_labels") }

// telemetryNotCarried explains, for the top-level Telemetry fields whose
// settings Trellis could honour in code, why the resource cannot set them.
var telemetryNotCarried = map[string]string{
	"accessLogging": "not carried to workloads by the control plane yet: set the access log in code with mesh.WithTelemetry(telemetry.WithAccessLog(...)) (see docs/SUPPORT.md)",
	"tracing":       "not carried to workloads by the control plane yet: set the sampling in code with the sampler of the TracerProvider given to mesh.WithTelemetry (see docs/SUPPORT.md)",
	"metrics":       "not supported: Trellis's metrics and their dimensions are fixed (see package telemetry)",
}

// telemetrySpec reports the Telemetry fields that cannot be set, with
// their reason, and removes them from spec so that the generic field
// check does not report them twice.
func telemetrySpec(spec map[string]any, add func(field, format string, args ...any)) {
	for _, key := range []string{"accessLogging", "access_logging", "tracing", "metrics"} {
		if _, ok := spec[key]; !ok {
			continue
		}
		why := telemetryNotCarried[key]
		if key == "access_logging" {
			why = telemetryNotCarried["accessLogging"]
		}
		add("spec."+key, "%s", why)
		delete(spec, key)
	}
}
