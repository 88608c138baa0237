package trellis

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/trellismesh/trellis"

// allowedImports is the layer rule of the module, in one table: for each
// package (by directory, a trailing "/..." covers its subdirectories), the
// module packages its non-test files may import. mesh and xdsserver never
// import each other; the policy packages import neither; internal engines
// import no public shell; examples use only the public API.
var allowedImports = map[string][]string{
	".":                  {},
	"mesh":               {"internal/...", "balancer/...", "resolver/...", "retry/...", "authz/...", "telemetry/..."},
	"xdsserver":          {"internal/..."},
	"balancer/...":       {"internal/..."},
	"resolver/...":       {"internal/..."},
	"retry/...":          {"internal/..."},
	"authz/...":          {"internal/..."},
	"telemetry/...":      {"internal/..."},
	"internal/...":       {"internal/..."},
	"internal/naming":    {}, // leaves shared by the control plane and the mesh
	"internal/urlpath":   {},
	"internal/ratelimit": {},
	"cmd/xdsserver":      {"xdsserver"},
	"cmd/trellisctl":     {"internal/..."},
	"cmd/trellis-bench":  {"mesh", "xdsserver", "internal/...", "examples/..."},
	"examples/...":       {"mesh", "xdsserver", "telemetry", "examples/..."},
}

func matches(pattern, pkg string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
	}
	return pkg == pattern
}

// rule returns the most specific table entry covering pkg.
func rule(pkg string) (string, bool) {
	best := ""
	found := false
	for pattern := range allowedImports {
		if matches(pattern, pkg) && (!found || len(pattern) > len(best)) {
			best, found = pattern, true
		}
	}
	return best, found
}

func TestImportGraph(t *testing.T) {
	imports := map[string]map[string]bool{} // package dir -> module imports
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(filepath.Dir(path))
		if imports[pkg] == nil {
			imports[pkg] = map[string]bool{}
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == module {
				imports[pkg]["."] = true
			} else if rest, ok := strings.CutPrefix(p, module+"/"); ok {
				imports[pkg][rest] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(imports) < 10 {
		t.Fatalf("found only %d packages; is the test running at the module root?", len(imports))
	}
	for pkg, deps := range imports {
		pattern, ok := rule(pkg)
		if !ok {
			t.Errorf("package %s is not in the import table; add it to allowedImports", pkg)
			continue
		}
		for dep := range deps {
			if matches(pattern, dep) && dep == pkg {
				continue
			}
			allowed := slices.ContainsFunc(allowedImports[pattern], func(a string) bool { return matches(a, dep) })
			if !allowed {
				t.Errorf("%s imports %s; the table allows %s only %v", pkg, dep, pattern, allowedImports[pattern])
			}
		}
	}
	if _, err := os.Stat("go.mod"); err != nil {
		t.Errorf("go.mod not found at the module root: %v", err)
	}
}

// TestImportRuleCatchesViolations guards the checker itself: edges the layer
// rule forbids must be reported as forbidden.
func TestImportRuleCatchesViolations(t *testing.T) {
	forbidden := [][2]string{
		{"mesh", "xdsserver"},
		{"xdsserver", "mesh"},
		{"balancer/ewma", "mesh"},
		{"authz", "xdsserver"},
		{"internal/translate", "mesh"},
		{"examples/quickstart", "internal/config"},
		{"internal/urlpath", "internal/secpolicy"},
		{"internal/naming", "internal/config"},
		{"internal/ratelimit", "internal/translate"},
	}
	for _, e := range forbidden {
		pattern, ok := rule(e[0])
		if !ok {
			t.Errorf("no rule covers %s", e[0])
			continue
		}
		if slices.ContainsFunc(allowedImports[pattern], func(a string) bool { return matches(a, e[1]) }) {
			t.Errorf("the table allows %s → %s, want it forbidden", e[0], e[1])
		}
	}
}

// caProtocol is the one Istio package a library may link: the CA's wire
// protocol (IstioCertificateService), which a workload speaks to get its
// certificates from the control plane (internal/identity). It is a
// service API, not a configuration schema.
const caProtocol = "istio.io/api/security/v1alpha1"

// istioDeps lists, for each public library package (a trailing "/..."
// covers its subdirectories), the istio.io packages among its
// dependencies. Only the control plane reads Istio's configuration
// schema; applications linking the mesh do not link it, and the policy
// engines (authz) link no Istio package at all.
var istioDeps = map[string][]string{
	"mesh":         {caProtocol},
	"telemetry":    {caProtocol}, // through internal/mtls's identity.Source
	"authz/...":    nil,
	"balancer/...": nil,
	"resolver/...": nil,
	"retry/...":    nil,
}

// istioLinks returns, for each package go list finds for patterns, the
// istio.io packages among its dependencies.
func istioLinks(t *testing.T, patterns ...string) map[string][]string {
	t.Helper()
	args := append([]string{"list", "-f", "{{.ImportPath}}{{range .Deps}} {{.}}{{end}}"}, patterns...)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go %s: %v", strings.Join(args, " "), err)
	}
	links := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkg, ok := strings.CutPrefix(fields[0], module+"/")
		if !ok {
			t.Fatalf("go list printed %q, want a package of %s", fields[0], module)
		}
		links[pkg] = slices.DeleteFunc(fields[1:], func(dep string) bool { return !strings.HasPrefix(dep, "istio.io/") })
	}
	return links
}

func TestLibrariesLinkNoIstioSchema(t *testing.T) {
	patterns := []string{"./internal/config"} // the guard below
	for p := range istioDeps {
		patterns = append(patterns, "./"+p)
	}
	links := istioLinks(t, patterns...)
	// Guard the check itself: the configuration loader does link the
	// schema.
	if !slices.Contains(links["internal/config"], "istio.io/api/networking/v1alpha3") {
		t.Fatalf("internal/config links %v of Istio, want istio.io/api/networking/v1alpha3 among them; is the check broken?", links["internal/config"])
	}
	delete(links, "internal/config")
	if len(links) < len(istioDeps) {
		t.Fatalf("go list found %d library packages, want at least %d", len(links), len(istioDeps))
	}
	for pkg, deps := range links {
		var allowed []string
		for pattern, a := range istioDeps {
			if matches(pattern, pkg) {
				allowed = a
			}
		}
		if extra := slices.DeleteFunc(deps, func(d string) bool { return slices.Contains(allowed, d) }); len(extra) > 0 {
			t.Errorf("%s links %v; of Istio it may link only %v", pkg, extra, allowed)
		}
	}
}
