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

	t.Run("metrics behind the token needs a token", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, bin, "-metrics-behind-token", "-admin-addr", "127.0.0.1:0", "-xds-addr", "127.0.0.1:0", "-secure-addr", "", "-data-dir", t.TempDir()).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "-metrics-behind-token needs -admin-token") {
			t.Errorf("exit = %v, output %q; want status 1 asking for -admin-token", err, out)
		}
	})

	t.Run("metrics behind the token", func(t *testing.T) {
		admin := startCommand(ctx, t, bin, "-admin-token", "s3cret", "-metrics-behind-token")
		for _, tc := range []struct {
			path, auth string
			want       int
		}{
			{"/metrics", "", http.StatusUnauthorized},
			{"/metrics", "Bearer s3cret", http.StatusOK},
			{"/debug/config_dump", "", http.StatusUnauthorized},
			{"/healthz", "", http.StatusOK},
		} {
			if got := get(t, "http://"+admin+tc.path, "", tc.auth); got != tc.want {
				t.Errorf("GET %s with %q = %d, want %d", tc.path, tc.auth, got, tc.want)
			}
		}
	})

	t.Run("without a token only loopback hosts are served", func(t *testing.T) {
		admin := startCommand(ctx, t, bin)
		for _, tc := range []struct {
			path, host string
			want       int
		}{
			{"/debug/config_dump", "attacker.example:15014", http.StatusForbidden},
			{"/metrics", "attacker.example:15014", http.StatusForbidden},
			{"/dashboard", "127.0.0.1.nip.io", http.StatusForbidden},
			{"/healthz", "attacker.example:15014", http.StatusOK},
			{"/debug/config_dump", "localhost", http.StatusOK},
		} {
			if got := get(t, "http://"+admin+tc.path, tc.host, ""); got != tc.want {
				t.Errorf("GET %s with Host %s = %d, want %d", tc.path, tc.host, got, tc.want)
			}
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

// startCommand runs the command with args (and loopback addresses), waits
// for it to log its admin address and returns it; the command is stopped
// with SIGTERM when the test ends, and must exit cleanly.
func startCommand(ctx context.Context, t *testing.T, bin string, args ...string) string {
	t.Helper()
	args = append(args, "-xds-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-secure-addr", "", "-data-dir", t.TempDir(), "-log-format", "json")
	cmd := exec.CommandContext(ctx, bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	admin := ""
	sc := bufio.NewScanner(stderr)
	re := regexp.MustCompile(`"admin":"([0-9.:]+)"`)
	for admin == "" && sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			admin = m[1]
		}
	}
	if admin == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the command never logged its admin address")
	}
	copied := make(chan struct{})
	go func() { io.Copy(io.Discard, stderr); close(copied) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-copied
		if err := cmd.Wait(); err != nil {
			t.Errorf("after SIGTERM: %v, want a clean exit", err)
		}
	})
	return admin
}

// get sends GET url with the Host host (if not empty) and the
// Authorization auth (if not empty) and returns the status code.
func get(t *testing.T, url, host, auth string) int {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
