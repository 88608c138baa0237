package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzLoad: loading arbitrary bytes as a config file never panics, either
// succeeds or fails with errors that each name the file, and is
// deterministic.
//
//	go test -run XXX -fuzz FuzzLoad -fuzztime 10m ./internal/config/
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{
		"",
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - match: [{uri: {prefix: /a}, headers: {x: {exact: y}}}]\n    route: [{destination: {host: r, subset: v1}, weight: 100}]\n",
		"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n  trafficPolicy: {loadBalancer: {simple: RANDOM}, outlierDetection: {consecutive5xxErrors: 3}}\n  subsets: [{name: v1, labels: {version: v1}}]\n",
		"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n  hosts: [s]\n  resolution: STATIC\n  ports: [{number: 80, name: http}]\n  endpoints: [{address: 10.0.0.1}]\n",
		"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: default}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n",
		"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mtls: {mode: STRICT}}\n",
		"---\n---\nkind: [\n",
		"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec: {hosts: [r], http: [{match: [{uri: {regex: '(a+)+$'}}], route: [{destination: {host: r}}]}]}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		files := map[string][]byte{"mesh.yaml": data}
		set, err := Load(files)
		if err != nil {
			if set != nil {
				t.Fatalf("Load() returned a set and an error")
			}
			for _, e := range Errors(err) {
				if e.File != "mesh.yaml" {
					t.Fatalf("error %q does not name the file", e)
				}
			}
			var ce *Error
			if len(Errors(err)) == 0 && !errors.As(err, &ce) && !strings.Contains(err.Error(), "mesh.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
		}
		set2, err2 := Load(files)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) || (set == nil) != (set2 == nil) {
			t.Fatalf("Load() is not deterministic: %v then %v", err, err2)
		}
	})
}
