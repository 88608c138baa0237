package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/trellismesh/trellis/examples/greeter/greeterpb"
	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/mtls"
	"github.com/trellismesh/trellis/mesh"
	"github.com/trellismesh/trellis/xdsserver"
)

// childEnv carries a child process's childArgs, as JSON. The binary (or
// the test binary) runs as a child when it is set.
const childEnv = "TRELLIS_BENCH_CHILD"

// childArgs tells a child process what to do.
type childArgs struct {
	Mode string // "cp", "first-rpc" or "footprint"

	// Mode cp: a control plane.
	Addr       string // xDS and registration
	SecureAddr string // TLS port with the CA; empty: none
	ConfigDir  string
	DataDir    string
	Tokens     bool // accept the join tokens of joinTokens
	Snapshot   bool // serve ConfigDir's endpoints from a snapshot cache instead (M9's baseline)

	// Mode first-rpc: dial and make one call.
	Variant      string // "plain" or "mesh"
	Target       string // mesh: NAME:PORT; plain: host:port
	ControlPlane string
	CAAddr       string
	Bundle       string
	CertFile     string // plain
	KeyFile      string // plain
	ServerID     string // plain

	// Mode footprint (and Variant, ControlPlane): dial each target.
	Endpoints [][]string // per target, the addresses of its endpoints
}

var joinTokens = map[string]xdsserver.WorkloadIdentity{
	"greeter-token": {Namespace: "default", ServiceAccount: "greeter"},
	"client-token":  {Namespace: "default", ServiceAccount: "client"},
	// The HTTP service kb runs as its own service account: an identity
	// serves only the service of its name unless configuration binds it.
	"kb-token": {Namespace: "default", ServiceAccount: "kb"},
}

const greeterID = "spiffe://cluster.local/ns/default/sa/greeter"

func childMain() error {
	var a childArgs
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &a); err != nil {
		return err
	}
	switch a.Mode {
	case "cp":
		return childControlPlane(a)
	case "footprint":
		f, err := footprintChild(a)
		if err != nil {
			return err
		}
		fmt.Printf("footprint %.0f %.0f %.0f %.0f %.0f %.0f\n", f[0].heap, f[0].rss, f[1].heap, f[1].rss, f[2].heap, f[2].rss)
		return nil
	case "first-rpc":
		d, err := firstRPC(a)
		if err != nil {
			return err
		}
		fmt.Printf("first-rpc %d\n", d.Nanoseconds())
		return nil
	}
	return fmt.Errorf("unknown mode %q", a.Mode)
}

// childControlPlane serves a control plane until its stdin closes, and
// answers "mem" on stdin with its heap in use and RSS after a GC.
func childControlPlane(a childArgs) error {
	if a.Snapshot {
		return childSnapshotControlPlane(a)
	}
	var opts []xdsserver.Option
	if a.ConfigDir != "" {
		opts = append(opts, xdsserver.WithConfigDir(a.ConfigDir))
	}
	if a.DataDir != "" {
		opts = append(opts, xdsserver.WithDataDir(a.DataDir))
	}
	if a.Tokens {
		opts = append(opts, xdsserver.WithJoinTokens(joinTokens))
	} else {
		opts = append(opts, xdsserver.WithInsecureRegistration()) // plaintext runs: servers without identities
	}
	srv, err := xdsserver.New(opts...)
	if err != nil {
		return err
	}
	defer srv.Close()
	lis, err := net.Listen("tcp", a.Addr)
	if err != nil {
		return err
	}
	go srv.Serve(lis)
	secure := "-"
	if a.SecureAddr != "" {
		slis, err := net.Listen("tcp", a.SecureAddr)
		if err != nil {
			return err
		}
		go srv.ServeSecure(slis)
		secure = slis.Addr().String()
	}
	fmt.Printf("ready %s %s\n", lis.Addr(), secure)
	answerParent()
	return nil
}

// childSnapshotControlPlane serves M9's snapshot-cache baseline until its
// stdin closes.
func childSnapshotControlPlane(a childArgs) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := grpc.NewServer()
	defer srv.Stop()
	if err := serveSnapshot(ctx, a.ConfigDir, srv); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", a.Addr)
	if err != nil {
		return err
	}
	go srv.Serve(lis)
	fmt.Printf("ready %s -\n", lis.Addr())
	answerParent()
	return nil
}

// answerParent answers the parent's questions on stdin until it closes:
// "mem" with the heap in use and RSS after a GC, "cpu" with the CPU time
// used so far in nanoseconds.
func answerParent() {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "mem":
			heap, rss := memNow()
			fmt.Printf("mem %d %d\n", heap, rss)
		case "cpu":
			fmt.Printf("cpu %d\n", cpuTime().Nanoseconds())
		}
	}
}

// memNow returns the heap in use and the resident set size, after a GC.
func memNow() (heap, rss uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, readRSS()
}

// readRSS returns VmRSS from /proc/self/status, 0 if unknown.
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// firstRPC measures the time from nothing to the first answered call.
func firstRPC(a childArgs) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	var cc *grpc.ClientConn
	switch a.Variant {
	case "mesh":
		var err error
		cc, err = mesh.Dial(a.Target, mesh.WithControlPlane(a.ControlPlane), mesh.WithJoinToken("client-token"),
			mesh.WithTrustBundleFile(a.Bundle), mesh.WithCAAddr(a.CAAddr))
		if err != nil {
			return 0, err
		}
	case "plain":
		src, err := identity.NewFileSource(a.CertFile, a.KeyFile, a.Bundle)
		if err != nil {
			return 0, err
		}
		defer src.Close()
		cfg, err := mtls.ClientConfig(src, spiffeid.RequireFromString(a.ServerID))
		if err != nil {
			return 0, err
		}
		cc, err = grpc.NewClient(a.Target, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return 0, err
		}
	default:
		return 0, fmt.Errorf("unknown variant %q", a.Variant)
	}
	defer cc.Close()
	if _, err := greeterpb.NewGreeterClient(cc).SayHello(ctx, &greeterpb.HelloRequest{Name: "first"}, grpc.WaitForReady(true)); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// child is a running child process.
type child struct {
	cmd  *exec.Cmd
	in   interface{ Close() error }
	w    *bufio.Writer
	out  *bufio.Reader
	addr string // control plane: xDS address
	tls  string // control plane: secure address
}

func startChild(ctx context.Context, a childArgs) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	js, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &child{cmd: cmd, in: in, w: bufio.NewWriter(in), out: bufio.NewReader(out)}, nil
}

// readLine returns the next line the child writes, split into fields,
// checking that the first is want.
func (c *child) readLine(want string) ([]string, error) {
	line, err := c.out.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("child exited before %q: %w", want, err)
	}
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != want {
		return nil, fmt.Errorf("child said %q, want %q", line, want)
	}
	return f[1:], nil
}

// startControlPlane starts a control plane child and waits until it serves.
func startControlPlane(ctx context.Context, a childArgs) (*child, error) {
	a.Mode = "cp"
	c, err := startChild(ctx, a)
	if err != nil {
		return nil, err
	}
	f, err := c.readLine("ready")
	if err != nil {
		c.kill()
		return nil, err
	}
	c.addr, c.tls = f[0], f[1]
	return c, nil
}

// mem asks a control plane child for its heap in use and RSS.
func (c *child) mem() (heap, rss uint64, err error) {
	if _, err := c.w.WriteString("mem\n"); err != nil {
		return 0, 0, err
	}
	if err := c.w.Flush(); err != nil {
		return 0, 0, err
	}
	f, err := c.readLine("mem")
	if err != nil {
		return 0, 0, err
	}
	if len(f) != 2 {
		return 0, 0, errors.New("bad mem line")
	}
	heap, _ = strconv.ParseUint(f[0], 10, 64)
	rss, _ = strconv.ParseUint(f[1], 10, 64)
	return heap, rss, nil
}

// cpu asks a control plane child for the CPU time it has used.
func (c *child) cpu() (time.Duration, error) {
	if _, err := c.w.WriteString("cpu\n"); err != nil {
		return 0, err
	}
	if err := c.w.Flush(); err != nil {
		return 0, err
	}
	f, err := c.readLine("cpu")
	if err != nil {
		return 0, err
	}
	if len(f) != 1 {
		return 0, errors.New("bad cpu line")
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns), err
}

// stop closes the child's stdin, which ends it, and waits.
func (c *child) stop() {
	c.in.Close()
	c.cmd.Wait()
}

// kill ends the child at once, as a crash would.
func (c *child) kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// runFirstRPC runs a first-rpc child and returns what it measured.
func runFirstRPC(ctx context.Context, a childArgs) (time.Duration, error) {
	a.Mode = "first-rpc"
	c, err := startChild(ctx, a)
	if err != nil {
		return 0, err
	}
	defer c.stop()
	f, err := c.readLine("first-rpc")
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	return time.Duration(ns), err
}
