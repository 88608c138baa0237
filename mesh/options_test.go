package mesh

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMisplacedOptionsDoNotCompile builds testdata/options, which calls
// each constructor with every option it takes and, on the lines marked
// "// want: METHOD", with an option it does not take. Exactly the marked
// lines must fail, each with the compiler's error naming METHOD as the
// missing method.
func TestMisplacedOptionsDoNotCompile(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	const file = "testdata/options/options.go"
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{} // line → the method the compiler must name
	for i, line := range strings.Split(string(src), "\n") {
		if _, method, ok := strings.Cut(line, "// want: "); ok {
			want[i+1] = strings.TrimSpace(method)
		}
	}
	if len(want) < 20 {
		t.Fatalf("%s marks %d misplaced options, want at least 20", file, len(want))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool, "build", "-gcflags=-e", "./testdata/options").CombinedOutput()
	if err == nil {
		t.Fatalf("go build ./testdata/options succeeded, want errors for the misplaced options")
	}
	diagnostic := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:(\d+):\d+: (.*)$`)
	got := map[int]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(line, "# ") {
			continue
		}
		m := diagnostic.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("go build printed %q, want only diagnostics of %s", line, file)
			continue
		}
		n, _ := strconv.Atoi(m[1])
		got[n] = m[2]
	}
	for _, n := range slices.Sorted(maps.Keys(want)) {
		method := want[n]
		msg, ok := got[n]
		switch {
		case !ok:
			t.Errorf("%s:%d compiled, want the error (missing method %s)", file, n, method)
		case !strings.Contains(msg, "(missing method "+method+")"):
			t.Errorf("%s:%d: %s; want (missing method %s)", file, n, msg, method)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[n]; !ok {
			t.Errorf("%s:%d: %s; want it to compile", file, n, got[n])
		}
	}
}
