package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileConfigIsBounded: an oversized file is refused before it is
// parsed, a regular expression over MaxRegexLength is rejected, and a
// deeply nested or enormous document does not bring the loader down.
func TestHostileConfigIsBounded(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("LoadDir(a %d-byte file) = %v, want a size error", MaxFileSize+1, err)
	}

	regex := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - match: [{uri: {regex: '" + strings.Repeat("a", MaxRegexLength+1) + "'}}]\n    route: [{destination: {host: r}}]\n"
	if _, err := Load(map[string][]byte{"mesh.yaml": []byte(regex)}); err == nil || !strings.Contains(err.Error(), "regex") {
		t.Errorf("Load(a %d-byte regex) = %v, want it rejected", MaxRegexLength+1, err)
	}

	nested := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	if _, err := Load(map[string][]byte{"mesh.yaml": []byte(nested)}); err == nil {
		t.Errorf("Load(10,000 nested lists) succeeded, want an error")
	}
	many := strings.Repeat("---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\n", 5000)
	if _, err := Load(map[string][]byte{"mesh.yaml": []byte(many)}); err == nil {
		t.Errorf("Load(5,000 unsupported documents) succeeded, want errors")
	}
}
