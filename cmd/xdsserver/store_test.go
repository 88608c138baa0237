package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellismesh/trellis/internal/etcdstore"
	"github.com/trellismesh/trellis/internal/etcdstore/etcdtest"
)

// TestCommandWithEtcdStore: -store etcd://... reads the configuration
// trellisctl apply wrote and is ready once it has; a bad -store exits
// naming it.
func TestCommandWithEtcdStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := build(t)

	out, err := exec.CommandContext(ctx, bin, "-store", "etcd://nowhere", "-xds-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-secure-addr", "", "-data-dir", t.TempDir()).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), `"etcd://nowhere"`) {
		t.Errorf("-store etcd://nowhere: exit %v, output %q; want status 1 naming the store", err, out)
	}

	srv := etcdtest.Start(t)
	c := etcdstore.NewClient(srv.Client(t), "/mesh")
	if _, err := c.Apply(ctx, map[string][]byte{"greeter.yaml": []byte("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: greeter}\nspec: {hosts: [greeter], resolution: STATIC, ports: [{number: 9080, name: grpc}]}\n")}); err != nil {
		t.Fatal(err)
	}
	store := "etcd://" + srv.Endpoint() + "/mesh"
	cmd := exec.CommandContext(ctx, bin, "-store", store, "-xds-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-secure-addr", "", "-data-dir", t.TempDir(), "-log-format", "json")
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
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/readyz = %d until the deadline", resp.StatusCode)
		case <-time.After(20 * time.Millisecond):
		}
	}
	resp, err := http.Get("http://" + admin + "/debug/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Config struct {
			Source    string
			Resources int
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&dump)
	resp.Body.Close()
	if err != nil || dump.Config.Source != store || dump.Config.Resources != 1 {
		t.Errorf("config dump: source %q, %d resources (%v); want %s's one", dump.Config.Source, dump.Config.Resources, err, store)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v, want a clean exit", err)
	}
}
