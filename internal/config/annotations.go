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
