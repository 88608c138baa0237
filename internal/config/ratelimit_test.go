package config_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/trellismesh/trellis/internal/config"
)

// annotated returns a networking document of kind whose metadata carries
// one annotation.
func annotated(kind, name, key, value, body string) string {
	return "apiVersion: networking.istio.io/v1\nkind: " + kind + "\nmetadata:\n  name: " + name +
		"\n  annotations:\n    " + key + ": '" + value + "'\nspec:\n" + strings.TrimPrefix(body, "\n")
}

const (
	drBody = `
  host: reviews
`
	vsBody = `
  hosts: [reviews]
  http:
  - name: reads
    route: [{destination: {host: reviews}}]
  - name: writes
    route: [{destination: {host: reviews}}]
`
)

func TestRateLimitAnnotations(t *testing.T) {
	tests := []struct {
		name       string
		doc        string
		client     *config.RateLimit
		server     *config.RateLimit
		routes     map[string]config.RateLimit
		wantErrors []string
	}{{
		name:   "client limit",
		doc:    annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `{"requestsPerSecond": 100, "burst": 20}`, drBody),
		client: &config.RateLimit{RequestsPerSecond: 100, Burst: 20},
	}, {
		name:   "burst defaults to the rate",
		doc:    annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `{"requestsPerSecond": 7}`, drBody),
		client: &config.RateLimit{RequestsPerSecond: 7},
	}, {
		name:   "server limit per caller",
		doc:    annotated("DestinationRule", "reviews", config.ServerRateLimitAnnotation, `{"requestsPerSecond": 100, "burst": 20, "perCaller": true}`, drBody),
		server: &config.RateLimit{RequestsPerSecond: 100, Burst: 20, PerCaller: true},
	}, {
		name:   "route limits",
		doc:    annotated("VirtualService", "reviews", config.RouteRateLimitAnnotation, `{"writes": {"requestsPerSecond": 5, "burst": 1}}`, vsBody),
		routes: map[string]config.RateLimit{"writes": {RequestsPerSecond: 5, Burst: 1}},
	}, {
		name:       "unknown key",
		doc:        annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `{"requestsPerSecond": 100, "rps": 20}`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/rate-limit"]: want {"requestsPerSecond": N, "burst": N}: unknown key "rps"`},
	}, {
		name:       "zero rate",
		doc:        annotated("DestinationRule", "reviews", config.ServerRateLimitAnnotation, `{"requestsPerSecond": 0}`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/server-rate-limit"]: requestsPerSecond must be a whole number from 1 to 1000000, not 0`},
	}, {
		name:       "missing rate",
		doc:        annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `{"burst": 3}`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/rate-limit"]: requestsPerSecond is required`},
	}, {
		name:       "negative burst",
		doc:        annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `{"requestsPerSecond": 1, "burst": -3}`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/rate-limit"]: want {"requestsPerSecond": N, "burst": N}: burst: number -3 is not a valid value`},
	}, {
		name:       "zero burst",
		doc:        annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `{"requestsPerSecond": 1, "burst": 0}`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/rate-limit"]: burst must be a whole number from 1 to 1000000, not 0`},
	}, {
		name:       "fractional rate",
		doc:        annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `{"requestsPerSecond": 2.5}`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/rate-limit"]: want {"requestsPerSecond": N, "burst": N}: requestsPerSecond: number 2.5 is not a valid value`},
	}, {
		name:       "perCaller on a client limit",
		doc:        annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `{"requestsPerSecond": 1, "perCaller": true}`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/rate-limit"]: perCaller applies to trellis.io/server-rate-limit only`},
	}, {
		name:       "not JSON",
		doc:        annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `100/s`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/rate-limit"]: want {"requestsPerSecond": N, "burst": N}: got a JSON number, not an object`},
	}, {
		name:       "trailing data",
		doc:        annotated("DestinationRule", "reviews", config.RateLimitAnnotation, `{"requestsPerSecond": 1} {}`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/rate-limit"]: want {"requestsPerSecond": N, "burst": N}: unexpected data after the JSON value`},
	}, {
		name:       "route annotation on a DestinationRule",
		doc:        annotated("DestinationRule", "reviews", config.RouteRateLimitAnnotation, `{}`, drBody),
		wantErrors: []string{`a.yaml:1: DestinationRule default/reviews: metadata.annotations["trellis.io/route-rate-limit"]: belongs on a VirtualService; on a DestinationRule use trellis.io/rate-limit or trellis.io/server-rate-limit`},
	}, {
		name:       "service annotation on a VirtualService",
		doc:        annotated("VirtualService", "reviews", config.RateLimitAnnotation, `{"requestsPerSecond": 1}`, vsBody),
		wantErrors: []string{`a.yaml:1: VirtualService default/reviews: metadata.annotations["trellis.io/rate-limit"]: belongs on a DestinationRule; on a VirtualService use trellis.io/route-rate-limit`},
	}, {
		name:       "unknown route",
		doc:        annotated("VirtualService", "reviews", config.RouteRateLimitAnnotation, `{"deletes": {"requestsPerSecond": 1}}`, vsBody),
		wantErrors: []string{`a.yaml:1: VirtualService default/reviews: metadata.annotations["trellis.io/route-rate-limit"]: route "deletes": no HTTP route of this VirtualService has that name`},
	}, {
		name:       "bad route limit",
		doc:        annotated("VirtualService", "reviews", config.RouteRateLimitAnnotation, `{"reads": {"requestsPerSecond": 1, "perCaller": true}}`, vsBody),
		wantErrors: []string{`a.yaml:1: VirtualService default/reviews: metadata.annotations["trellis.io/route-rate-limit"]: route "reads": perCaller applies to trellis.io/server-rate-limit only`},
	}, {
		name:       "route map not an object",
		doc:        annotated("VirtualService", "reviews", config.RouteRateLimitAnnotation, `[1]`, vsBody),
		wantErrors: []string{`a.yaml:1: VirtualService default/reviews: metadata.annotations["trellis.io/route-rate-limit"]: want {"<route name>": {"requestsPerSecond": N, "burst": N}, ...}: got a JSON array, not an object`},
	}, {
		name:       "empty route map",
		doc:        annotated("VirtualService", "reviews", config.RouteRateLimitAnnotation, `{}`, vsBody),
		wantErrors: []string{`a.yaml:1: VirtualService default/reviews: metadata.annotations["trellis.io/route-rate-limit"]: no route is limited`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := load(map[string]string{"a.yaml": tt.doc})
			if diff := cmp.Diff(errorTexts(t, err), tt.wantErrors); diff != "" {
				t.Fatalf("Load() errors (-got +want):\n%s", diff)
			}
			if err != nil {
				return
			}
			var client, server *config.RateLimit
			var routes map[string]config.RateLimit
			for _, dr := range set.DestinationRules {
				client, server = config.ClientRateLimit(dr), config.ServerRateLimit(dr)
			}
			for _, vs := range set.VirtualServices {
				routes = config.RouteRateLimits(vs)
			}
			if diff := cmp.Diff(client, tt.client); diff != "" {
				t.Errorf("ClientRateLimit() (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(server, tt.server); diff != "" {
				t.Errorf("ServerRateLimit() (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(routes, tt.routes); diff != "" {
				t.Errorf("RouteRateLimits() (-got +want):\n%s", diff)
			}
		})
	}
}

func TestRateLimitTokens(t *testing.T) {
	for _, tt := range []struct {
		r    config.RateLimit
		want uint32
	}{{config.RateLimit{RequestsPerSecond: 10}, 10}, {config.RateLimit{RequestsPerSecond: 10, Burst: 3}, 3}} {
		if got := tt.r.Tokens(); got != tt.want {
			t.Errorf("%+v.Tokens() = %d, want %d", tt.r, got, tt.want)
		}
	}
}
