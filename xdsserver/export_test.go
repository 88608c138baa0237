package xdsserver

import (
	"os"
	"path/filepath"
)

func writeTestFile(dir, name, content string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
}
