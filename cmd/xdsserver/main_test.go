package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// build compiles the command into a temporary directory.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xdsserver")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := build(t)

	t.Run("bad config exits with the error", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec: {host: r, trafficPolicy: {tls: {mode: SIMPLE}}}\n"), 0o644)
		out, err := exec.CommandContext(ctx, bin, "-config", dir, "-xds-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-secure-addr", "127.0.0.1:0", "-data-dir", t.TempDir()).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("exit = %v, want status 1\n%s", err, out)
		}
		want := "bad.yaml:1: DestinationRule default/r: spec.trafficPolicy.tls.mode: SIMPLE is not supported (supported: ISTIO_MUTUAL, DISABLE)"
		if !strings.Contains(string(out), want) {
			t.Errorf("output:\n%s\nwant it to contain %q", out, want)
		}
	})

	t.Run("public admin address needs a token", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, bin, "-admin-addr", "0.0.0.0:0", "-xds-addr", "127.0.0.1:0", "-secure-addr", "", "-data-dir", t.TempDir()).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "set -admin-token") {
			t.Errorf("exit = %v, output %q; want status 1 asking for -admin-token", err, out)
		}
	})

	t.Run("kubernetes flags", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"-kubernetes", "-kubeconfig", filepath.Join(t.TempDir(), "missing")}, "kube: "},
			{[]string{"-kubernetes", "-kubeconfig", "x", "-config", t.TempDir()}, "WithKubernetes and WithConfigDir are exclusive"},
			{[]string{"-kubeconfig", "x"}, "-kubeconfig needs -kubernetes"},
		} {
			args := append(c.args, "-xds-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-secure-addr", "", "-data-dir", t.TempDir())
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), c.want) {
				t.Errorf("xdsserver %q: exit = %v, output %q; want status 1 and %q", c.args, err, out, c.want)
			}
		}
	})

	t.Run("renewal chain must be positive", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, bin, "-ca-max-renewal-chain", "0s", "-xds-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-secure-addr", "", "-data-dir", t.TempDir()).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "-ca-max-renewal-chain 0s: must be positive") {
			t.Errorf("exit = %v, output %q; want status 1 refusing the flag", err, out)
		}
	})

	t.Run("unknown flag", func(t *testing.T) {
		err := exec.CommandContext(ctx, bin, "-bogus").Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Errorf("exit = %v, want failure", err)
		}
	})

	t.Run("serves admin and stops on SIGTERM", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, bin, "-xds-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-secure-addr", "127.0.0.1:0", "-data-dir", t.TempDir(), "-log-format", "json")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		admin := ""
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`"admin":"([0-9.:]+)"`)
		for admin == "" && sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				admin = m[1]
			}
		}
		if admin == "" {
			t.Fatal("the command never logged its admin address")
		}
		go io.Copy(io.Discard, stderr)
		for _, path := range []string{"/healthz", "/readyz", "/metrics", "/debug/config_dump"} {
			resp, err := http.Get("http://" + admin + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("GET %s = %d, want 200", path, resp.StatusCode)
			}
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("after SIGTERM: %v, want a clean exit", err)
		}
	})
}
