package trellis

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
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
	".":                 {},
	"mesh":              {"internal/...", "balancer/...", "resolver/...", "retry/...", "authz/...", "telemetry/..."},
	"xdsserver":         {"internal/..."},
	"balancer/...":      {"internal/..."},
	"resolver/...":      {"internal/..."},
	"retry/...":         {"internal/..."},
	"authz/...":         {"internal/..."},
	"telemetry/...":     {"internal/..."},
	"internal/...":      {"internal/..."},
	"cmd/xdsserver":     {"xdsserver"},
	"cmd/trellisctl":    {"internal/..."},
	"cmd/trellis-bench": {"mesh", "xdsserver", "internal/...", "examples/..."},
	"examples/...":      {"mesh", "xdsserver", "telemetry", "examples/..."},
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
