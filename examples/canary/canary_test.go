// Package canary_test runs examples/canary as its README tells a user to:
// the control plane, three greeter servers and the client, each a process
// of its own built from this repository.
package canary_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Clusters of the DestinationRule's subsets, as the control plane names
// them.
const (
	v1Cluster = "outbound|9080|v1|greeter.default.svc.cluster.local"
	v2Cluster = "outbound|9080|v2|greeter.default.svc.cluster.local"
)

func TestCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs five processes")
	}
	bin := buildBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)

	// Terminal 1: the control plane, loading the example's configuration.
	config, err := filepath.Abs("config")
	if err != nil {
		t.Fatal(err)
	}
	xdsAddr, adminAddr := freeAddr(t), freeAddr(t)
	cp := start(t, filepath.Join(bin, "xdsserver"),
		"-config", config, "-insecure-registration", "-xds-addr", xdsAddr, "-admin-addr", adminAddr, "-secure-addr", freeAddr(t), "-data-dir", t.TempDir())
	waitFor(ctx, t, "the control plane to be ready", func() error {
		cp.checkRunning(t)
		_, err := get(ctx, "http://"+adminAddr+"/readyz")
		return err
	})

	// Terminals 2 to 4: greeter v1, v1 and v2.
	var servers []*process
	for _, version := range []string{"v1", "v1", "v2"} {
		servers = append(servers, start(t, filepath.Join(bin, "server"), "-version", version, "-control-plane", xdsAddr))
	}
	waitFor(ctx, t, "three greeter endpoints in EDS", func() error {
		for _, p := range append(servers, cp) {
			p.checkRunning(t)
		}
		eps, err := endpoints(ctx, adminAddr)
		if err != nil {
			return err
		}
		if n1, n2 := len(eps[v1Cluster]), len(eps[v2Cluster]); n1 != 2 || n2 != 1 {
			return fmt.Errorf("%d v1 and %d v2 endpoints, want 2 and 1", n1, n2)
		}
		return nil
	})

	// Terminal 5: the client.
	client := func(t *testing.T, args ...string) map[string]share {
		t.Helper()
		args = append([]string{"-control-plane", xdsAddr}, args...)
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "client"), args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("client %s:\n%s", strings.Join(args, " "), out)
		return parseShares(t, string(out))
	}

	t.Run("canary 90/10", func(t *testing.T) {
		const n = 1000
		got := client(t, "-n", strconv.Itoa(n))
		// Five standard deviations of a binomial share.
		tol := 5 * math.Sqrt(0.1*0.9/n) * 100
		if v1, v2 := got["v1"], got["v2"]; v1.count+v2.count != n || math.Abs(v2.percent-10) > tol {
			t.Errorf("v1 %+v, v2 %+v; want v2 at 10±%.1f%% of %d RPCs and v1 the rest", v1, v2, tol, n)
		}
		if got["v1"].instances != 2 {
			t.Errorf("%d v1 instances answered, want both", got["v1"].instances)
		}
	})

	t.Run("x-canary header", func(t *testing.T) {
		got := client(t, "-n", "200", "-header", "x-canary: true")
		if got["v2"].count != 200 || got["v1"].count != 0 {
			t.Errorf("v1 %+v, v2 %+v; want all 200 RPCs on v2", got["v1"], got["v2"])
		}
	})

	t.Run("stopping a server", func(t *testing.T) {
		// SIGTERM, as Ctrl-C in its terminal: the server deregisters and
		// exits cleanly, and clients stop picking it.
		stopped := servers[1]
		if err := stopped.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-stopped.done:
		case <-ctx.Done():
			t.Fatalf("server still running after SIGTERM: %v", ctx.Err())
		}
		if stopped.err != nil {
			t.Fatalf("server exited with %v after SIGTERM, want success\n%s", stopped.err, stopped.out.String())
		}
		waitFor(ctx, t, "the endpoint to leave EDS", func() error {
			eps, err := endpoints(ctx, adminAddr)
			if err != nil {
				return err
			}
			if n := len(eps[v1Cluster]); n != 1 {
				return fmt.Errorf("%d v1 endpoints, want 1", n)
			}
			return nil
		})
		got := client(t, "-n", "300")
		if got["v1"].instances != 1 || got["v1"].count+got["v2"].count != 300 {
			t.Errorf("v1 %+v, v2 %+v; want all 300 RPCs answered, v1 by one instance", got["v1"], got["v2"])
		}
	})
}

// buildBinaries builds the control plane and the example's programs into a
// temporary directory, with the race detector if the test has it.
func buildBinaries(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the example with: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := t.TempDir()
	args := []string{"build", "-o", bin + string(filepath.Separator)}
	if raceEnabled() {
		args = append(args, "-race")
	}
	args = append(args,
		"github.com/trellismesh/trellis/cmd/xdsserver",
		"github.com/trellismesh/trellis/examples/canary/server",
		"github.com/trellismesh/trellis/examples/canary/client")
	start := time.Now()
	if out, err := exec.CommandContext(ctx, goTool, args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("go %s: %v", strings.Join(args[:len(args)-3], " "), time.Since(start).Round(time.Millisecond))
	return bin
}

func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// process is a program running until the test ends.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // the exit error, once done is closed
}

// start runs a program until the test ends; it is killed then, and its
// output logged if the test failed.
func start(t *testing.T, path string, args ...string) *process {
	t.Helper()
	p := &process{
		name: filepath.Base(path) + " " + strings.Join(args, " "),
		cmd:  exec.Command(path, args...),
		out:  &syncBuffer{},
		done: make(chan struct{}),
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		out := p.out.String()
		if strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("%s: data race:\n%s", p.name, out)
		} else if t.Failed() {
			t.Logf("%s:\n%s", p.name, out)
		}
	})
	return p
}

// checkRunning fails the test at once if the process has exited.
func (p *process) checkRunning(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.out.String())
	default:
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// waitFor polls cond until it returns nil, and fails the test with cond's
// last error if ctx ends first.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() error) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, err)
		case <-tick.C:
		}
	}
}

// get returns the body of a successful GET.
func get(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, nil
}

// endpoints returns the endpoint addresses of every cluster in the control
// plane's EDS resources, read from /debug/config_dump.
func endpoints(ctx context.Context, adminAddr string) (map[string][]string, error) {
	body, err := get(ctx, "http://"+adminAddr+"/debug/config_dump")
	if err != nil {
		return nil, err
	}
	var dump struct {
		Endpoints map[string][]string `json:"endpoints"`
	}
	if err := json.Unmarshal(body, &dump); err != nil {
		return nil, fmt.Errorf("config dump: %w", err)
	}
	return dump.Endpoints, nil
}

// share is one line of the client's output.
type share struct {
	count     int
	percent   float64
	instances int
}

// shareRE matches "  v1       896   89.6%   (127.0.0.1:37689 448, 127.0.0.1:46671 448)".
var shareRE = regexp.MustCompile(`(?m)^\s+(v\d+)\s+(\d+)\s+([\d.]+)%\s+\(([^)]*)\)$`)

func parseShares(t *testing.T, out string) map[string]share {
	t.Helper()
	shares := map[string]share{}
	for _, m := range shareRE.FindAllStringSubmatch(out, -1) {
		count, _ := strconv.Atoi(m[2])
		percent, _ := strconv.ParseFloat(m[3], 64)
		shares[m[1]] = share{count: count, percent: percent, instances: len(strings.Split(m[4], ", "))}
	}
	if len(shares) == 0 {
		t.Fatalf("no version shares in the client's output:\n%s", out)
	}
	return shares
}
