package config

import (
	"maps"
	"slices"
	"strings"
)

// TrellisAnnotationPrefix marks the annotations Trellis reads. An
// annotation with this prefix that Trellis does not know is rejected, like
// an unknown field: a misspelt extension would otherwise be silently
// ignored.
const TrellisAnnotationPrefix = "trellis.io/"

// trellisAnnotations are the Trellis annotations and the kinds they go on.
var trellisAnnotations = map[string]string{
	LoadBalancerAnnotation:    KindDestinationRule,
	RateLimitAnnotation:       KindDestinationRule,
	ServerRateLimitAnnotation: KindDestinationRule,
	RouteRateLimitAnnotation:  KindVirtualService,
}

// checkTrellisAnnotations reports unknown trellis.io/ annotations, and the
// load-balancer annotation on a kind other than DestinationRule (the
// rate-limit annotations' placement is checked with their values).
func checkTrellisAnnotations(kind string, annotations map[string]string, add func(field, format string, args ...any)) {
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		if !strings.HasPrefix(k, TrellisAnnotationPrefix) {
			continue
		}
		field := "metadata.annotations[" + quote(k) + "]"
		want, ok := trellisAnnotations[k]
		switch {
		case !ok:
			known := slices.Sorted(maps.Keys(trellisAnnotations))
			add(field, "unknown Trellis annotation (known: %s; see docs/SUPPORT.md)", strings.Join(known, ", "))
		case k == LoadBalancerAnnotation && kind != want:
			add(field, "belongs on a %s", want)
		}
	}
}

// DryRunAnnotation on an AuthorizationPolicy makes it a dry run, as in
// Istio: the policy is evaluated for every request it applies to and its
// would-be decision logged and counted, never enforced. Its value is
// "true" or "false"; anything else is rejected (Istio would log the error
// and enforce the policy). On any other kind it is rejected too.
const DryRunAnnotation = "istio.io/dry-run"

// DryRun reports whether ap is annotated istio.io/dry-run: "true".
func (ap *AuthorizationPolicy) DryRun() bool {
	return ap.Annotations[DryRunAnnotation] == "true"
}

// checkIstioAnnotations reports an invalid or misplaced Istio annotation
// that changes what Trellis does (istio.io/dry-run). Other Istio
// annotations are left alone, like any Kubernetes metadata.
func checkIstioAnnotations(kind string, annotations map[string]string, add func(field, format string, args ...any)) {
	v, ok := annotations[DryRunAnnotation]
	if !ok {
		return
	}
	field := "metadata.annotations[" + quote(DryRunAnnotation) + "]"
	switch {
	case kind != KindAuthorizationPolicy:
		add(field, "applies only to an AuthorizationPolicy")
	case v != "true" && v != "false":
		add(field, "%q is not a valid value (true or false)", v)
	}
}
