package main

import (
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
)

// Commands that read a running control plane's admin endpoint.

const adminUsage = `  status [-admin ADDR] [-token T] [-o text|json]
                               connected clients and whether they are in sync
  config-dump [-admin ADDR] [-token T] [-client NODE]
                               what the control plane serves (JSON), or what one client gets
  describe [-admin ADDR] [-token T] [-n NAMESPACE] [-o text|json] SERVICE
                               routes, subsets, endpoints and policies of a service
`

// adminFlags are the flags of every admin command.
type adminFlags struct {
	fs     *flag.FlagSet
	addr   *string
	token  *string
	format *string
}

func newAdminFlags(name string, stderr io.Writer) *adminFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &adminFlags{
		fs:     fs,
		addr:   fs.String("admin", cmp.Or(os.Getenv("TRELLIS_ADMIN"), "127.0.0.1:15014"), "the control plane's admin address (env TRELLIS_ADMIN)"),
		token:  fs.String("token", os.Getenv("TRELLIS_ADMIN_TOKEN"), "bearer token for the admin endpoint (env TRELLIS_ADMIN_TOKEN)"),
		format: fs.String("o", "text", "output format: text or json"),
	}
}

// dump is the part of /debug/config_dump the commands read.
type dump struct {
	Config struct {
		Dir        string   `json:"dir"`
		Valid      bool     `json:"lastLoadValid"`
		LastErrors []string `json:"lastErrors"`
		Build      uint64   `json:"build"`
	} `json:"config"`
	Registrations []struct {
		Service     string            `json:"service"`
		Namespace   string            `json:"namespace"`
		Address     string            `json:"address"`
		Port        uint32            `json:"port"`
		ServicePort uint32            `json:"servicePort"`
		Labels      map[string]string `json:"labels"`
		Identity    string            `json:"identity"`
	} `json:"registrations"`
	Endpoints map[string][]string `json:"endpoints"`
	Clients   []struct {
		Node      string    `json:"node"`
		Stream    int64     `json:"stream"`
		Delta     bool      `json:"delta"`
		Connected time.Time `json:"connected"`
		Types     map[string]struct {
			Subscribed       []string  `json:"subscribed"`
			AckedVersion     string    `json:"ackedVersion"`
			Acks             int       `json:"acks"`
			Nacks            int       `json:"nacks"`
			LastNack         string    `json:"lastNack"`
			LastNackTime     time.Time `json:"lastNackTime"`
			ConsecutiveNacks int       `json:"consecutiveNacks"`
		} `json:"types"`
	} `json:"clients"`
	Resources map[string]map[string]json.RawMessage `json:"resources"`
}

// fetch reads path from the admin endpoint.
func (a *adminFlags) fetch(path string) ([]byte, error) {
	req, err := http.NewRequest("GET", "http://"+*a.addr+path, nil)
	if err != nil {
		return nil, err
	}
	if *a.token != "" {
		req.Header.Set("Authorization", "Bearer "+*a.token)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusForbidden {
		// Only a control plane without an admin token says 403 (with one,
		// a missing or wrong token is 401).
		return nil, fmt.Errorf("%s%s: %s: without an admin token the control plane answers only on loopback: run trellisctl on its host (or through a port-forward) with -admin 127.0.0.1:PORT or localhost:PORT, or give it -admin-token", *a.addr, path, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s%s: %s: %s", *a.addr, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func (a *adminFlags) dump() (*dump, []byte, error) {
	raw, err := a.fetch("/debug/config_dump")
	if err != nil {
		return nil, nil, err
	}
	d := new(dump)
	if err := json.Unmarshal(raw, d); err != nil {
		return nil, nil, fmt.Errorf("config dump: %w", err)
	}
	return d, raw, nil
}

// syncState says whether a client has accepted what it was last sent.
func syncState(acks, consecutiveNacks int) string {
	switch {
	case consecutiveNacks > 0:
		return "NACKED"
	case acks == 0:
		return "PENDING"
	}
	return "SYNCED"
}

func status(args []string, stdout, stderr io.Writer) int {
	a := newAdminFlags("status", stderr)
	if err := a.fs.Parse(args); err != nil || a.fs.NArg() != 0 {
		fmt.Fprint(stderr, "usage: trellisctl status [-admin ADDR] [-token T] [-o text|json]\n")
		return 2
	}
	d, _, err := a.dump()
	if err != nil {
		fmt.Fprintln(stderr, "trellisctl:", err)
		return 1
	}
	type typeRow struct {
		Type, State, Version, LastNack string
		Acks, Nacks                    int
	}
	type clientRow struct {
		Node  string    `json:"node"`
		Delta bool      `json:"delta"`
		Since time.Time `json:"connected"`
		Types []typeRow `json:"types"`
		State string    `json:"state"`
	}
	var rows []clientRow
	for _, c := range d.Clients {
		r := clientRow{Node: c.Node, Delta: c.Delta, Since: c.Connected, State: "SYNCED"}
		for _, t := range slices.Sorted(maps.Keys(c.Types)) {
			ts := c.Types[t]
			st := syncState(ts.Acks, ts.ConsecutiveNacks)
			r.Types = append(r.Types, typeRow{Type: t, State: st, Version: ts.AckedVersion, LastNack: ts.LastNack, Acks: ts.Acks, Nacks: ts.Nacks})
			if st != "SYNCED" && r.State != "NACKED" {
				r.State = st
			}
		}
		rows = append(rows, r)
	}
	if *a.format == "json" {
		return writeJSON(stdout, stderr, map[string]any{"configValid": d.Config.Valid, "configErrors": d.Config.LastErrors, "clients": rows})
	}
	cfg := "valid"
	if !d.Config.Valid {
		cfg = fmt.Sprintf("REJECTED (%d errors; the last good configuration is serving)", len(d.Config.LastErrors))
	}
	fmt.Fprintf(stdout, "configuration: %s, build %d\n", cfg, d.Config.Build)
	for _, e := range d.Config.LastErrors {
		fmt.Fprintln(stdout, "  error:", e)
	}
	fmt.Fprintf(stdout, "%-44s %-7s %-8s %s\n", "CLIENT", "STREAM", "STATE", "TYPES")
	for _, r := range rows {
		var types []string
		for _, t := range r.Types {
			types = append(types, fmt.Sprintf("%s %s", t.Type, t.State))
		}
		mode := "sotw"
		if r.Delta {
			mode = "delta"
		}
		fmt.Fprintf(stdout, "%-44s %-7s %-8s %s\n", r.Node, mode, r.State, strings.Join(types, ", "))
		for _, t := range r.Types {
			if t.LastNack != "" {
				fmt.Fprintf(stdout, "  last %s NACK: %s\n", t.Type, t.LastNack)
			}
		}
	}
	return 0
}

func configDump(args []string, stdout, stderr io.Writer) int {
	a := newAdminFlags("config-dump", stderr)
	client := a.fs.String("client", "", "only this client's status (node ID)")
	if err := a.fs.Parse(args); err != nil || a.fs.NArg() != 0 {
		fmt.Fprint(stderr, "usage: trellisctl config-dump [-admin ADDR] [-token T] [-client NODE]\n")
		return 2
	}
	path := "/debug/config_dump"
	if *client != "" {
		path += "?client=" + url.QueryEscape(*client) // that client's status and view of the resources
	}
	raw, err := a.fetch(path)
	if err != nil {
		fmt.Fprintln(stderr, "trellisctl:", err)
		return 1
	}
	stdout.Write(raw)
	return 0
}

// description is what describe finds about a service.
type description struct {
	Service   string              `json:"service"`
	Host      string              `json:"host"`
	Listeners []string            `json:"listeners"`
	Routes    []json.RawMessage   `json:"routes"`
	Clusters  map[string][]string `json:"clusters"` // cluster → endpoints
	Workloads []workload          `json:"workloads"`
}

type workload struct {
	Address  string            `json:"address"`
	Labels   map[string]string `json:"labels,omitempty"`
	Identity string            `json:"identity,omitempty"`
	MTLS     string            `json:"mtls"`
	Policies []string          `json:"policies,omitempty"`
	JWT      bool              `json:"jwt"`
}

func describe(args []string, stdout, stderr io.Writer) int {
	a := newAdminFlags("describe", stderr)
	ns := a.fs.String("n", "default", "namespace of the service")
	if err := a.fs.Parse(args); err != nil || a.fs.NArg() != 1 {
		fmt.Fprint(stderr, "usage: trellisctl describe [-admin ADDR] [-token T] [-n NAMESPACE] [-o text|json] SERVICE\n")
		return 2
	}
	svc := a.fs.Arg(0)
	d, _, err := a.dump()
	if err != nil {
		fmt.Fprintln(stderr, "trellisctl:", err)
		return 1
	}
	host := svc
	if !strings.Contains(svc, ".") {
		host = svc + "." + *ns + ".svc.cluster.local"
	}
	desc := description{Service: svc, Host: host, Clusters: map[string][]string{}}
	for name := range d.Resources["CDS"] {
		if strings.HasSuffix(name, "|"+host) {
			desc.Clusters[name] = d.Endpoints[name]
		}
	}
	for name, raw := range d.Resources["RDS"] {
		if name == host || strings.HasPrefix(name, host+":") || strings.HasPrefix(name, svc+":") {
			desc.Routes = append(desc.Routes, raw)
		}
	}
	for name := range d.Resources["LDS"] {
		if base, _, _ := strings.Cut(name, ":"); base == svc || base == host {
			desc.Listeners = append(desc.Listeners, name)
		}
	}
	slices.Sort(desc.Listeners)
	for _, r := range d.Registrations {
		if r.Service != svc || r.Namespace != *ns {
			continue
		}
		w := workload{Address: fmt.Sprintf("%s:%d", r.Address, r.Port), Labels: r.Labels, Identity: r.Identity}
		w.MTLS, w.Policies, w.JWT = serverPolicy(d.Resources["LDS"][fmt.Sprintf("grpc/server?xds.resource.listening_address=%s", w.Address)])
		desc.Workloads = append(desc.Workloads, w)
	}
	if len(desc.Clusters) == 0 && len(desc.Workloads) == 0 && len(desc.Listeners) == 0 {
		fmt.Fprintf(stderr, "trellisctl: the control plane knows no service %s (%s)\n", svc, host)
		return 1
	}
	if *a.format == "json" {
		return writeJSON(stdout, stderr, desc)
	}
	fmt.Fprintf(stdout, "service %s (%s)\n", svc, host)
	fmt.Fprintf(stdout, "listeners: %s\n", strings.Join(desc.Listeners, ", "))
	for _, raw := range desc.Routes {
		printRoutes(stdout, raw)
	}
	for _, c := range slices.Sorted(maps.Keys(desc.Clusters)) {
		fmt.Fprintf(stdout, "cluster %s: %d endpoints %v\n", c, len(desc.Clusters[c]), desc.Clusters[c])
	}
	for _, w := range desc.Workloads {
		fmt.Fprintf(stdout, "workload %s %v identity=%q mtls=%s jwt=%v policies=%v\n", w.Address, w.Labels, w.Identity, w.MTLS, w.JWT, w.Policies)
	}
	return 0
}

// printRoutes prints a route configuration's routes, one line each.
func printRoutes(w io.Writer, raw json.RawMessage) {
	var rc struct {
		Name         string `json:"name"`
		VirtualHosts []struct {
			Routes []struct {
				Match json.RawMessage `json:"match"`
				Route struct {
					Cluster          string `json:"cluster"`
					WeightedClusters struct {
						Clusters []struct {
							Name   string `json:"name"`
							Weight int    `json:"weight"`
						} `json:"clusters"`
					} `json:"weightedClusters"`
				} `json:"route"`
			} `json:"routes"`
		} `json:"virtualHosts"`
	}
	if json.Unmarshal(raw, &rc) != nil {
		return
	}
	fmt.Fprintf(w, "routes %s:\n", rc.Name)
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			to := r.Route.Cluster
			if to == "" {
				var parts []string
				for _, c := range r.Route.WeightedClusters.Clusters {
					parts = append(parts, fmt.Sprintf("%s=%d", c.Name, c.Weight))
				}
				to = strings.Join(parts, " ")
			}
			fmt.Fprintf(w, "  %s -> %s\n", string(r.Match), to)
		}
	}
}

// serverPolicy reads a server listener: the mTLS mode, the RBAC policies
// and whether JWT authentication is on.
func serverPolicy(raw json.RawMessage) (mode string, policies []string, jwt bool) {
	if raw == nil {
		return "unknown (no listener)", nil, false
	}
	var l struct {
		FilterChains []struct {
			TransportSocket json.RawMessage `json:"transportSocket"`
			Filters         []struct {
				TypedConfig struct {
					HTTPFilters []struct {
						Name        string `json:"name"`
						TypedConfig struct {
							Rules struct {
								Action   string                     `json:"action"`
								Policies map[string]json.RawMessage `json:"policies"`
							} `json:"rules"`
						} `json:"typedConfig"`
					} `json:"httpFilters"`
				} `json:"typedConfig"`
			} `json:"filters"`
		} `json:"filterChains"`
	}
	if json.Unmarshal(raw, &l) != nil {
		return "unreadable", nil, false
	}
	var tlsChain, plain bool
	for i, fc := range l.FilterChains {
		if fc.TransportSocket != nil {
			tlsChain = true
		} else {
			plain = true
		}
		if i > 0 {
			continue
		}
		for _, f := range fc.Filters {
			for _, hf := range f.TypedConfig.HTTPFilters {
				switch {
				case strings.Contains(hf.Name, "jwt_authn"):
					jwt = true
				case strings.Contains(hf.Name, "rbac"):
					action := cmp.Or(hf.TypedConfig.Rules.Action, "ALLOW")
					for _, p := range slices.Sorted(maps.Keys(hf.TypedConfig.Rules.Policies)) {
						policies = append(policies, action+" "+p)
					}
				}
			}
		}
	}
	switch {
	case tlsChain && plain:
		mode = "PERMISSIVE"
	case tlsChain:
		mode = "STRICT"
	default:
		mode = "DISABLE"
	}
	return mode, policies, jwt
}

func writeJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintln(stderr, "trellisctl:", err)
		return 1
	}
	return 0
}
