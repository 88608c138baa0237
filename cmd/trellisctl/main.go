// Command trellisctl inspects Trellis configuration and control planes.
//
//	trellisctl validate [-o text|json] [-strict] DIR
//	trellisctl apply -store etcd://HOST:PORT[,HOST:PORT...][/PREFIX] DIR
//	trellisctl status [-admin ADDR] [-token T] [-o text|json]
//	trellisctl config-dump [-admin ADDR] [-token T] [-client NODE]
//	trellisctl describe [-admin ADDR] [-token T] [-n NAMESPACE] [-o text|json] SERVICE
//
// validate loads DIR as the control plane would (every *.yaml, *.yml and
// *.json file directly inside it) and prints every error, naming file,
// line, resource and field, then the findings of an analysis of the valid
// configuration: routes that can never match, hosts no ServiceEntry
// defines, selectors and subsets that select nothing, authorization
// policies that allow nothing or match nothing. It exits 1 if the
// configuration would be rejected (or, with -strict, if there are
// warnings), 2 on a usage error, 0 otherwise. Run it in CI before a change
// reaches the control plane.
//
// apply validates DIR the same way and, only if it is valid, writes it to
// the etcd store that xdsserver -store reads (under <prefix>/config/, one
// key per file) in one transaction: changed files are put, keys of files no
// longer in DIR are deleted. Every replica reloads from it.
//
// status, config-dump and describe read a running control plane's admin
// endpoint (-admin, default 127.0.0.1:15014; a bearer token with -token when
// the admin endpoint requires one): status lists the connected xDS clients
// and whether each accepted what it was last sent (SYNCED, PENDING or
// NACKED, with the last NACK's reason), config-dump prints what the control
// plane serves, and describe shows a service's listeners, routes, clusters
// and endpoints, and for each registered workload its identity, mTLS mode
// and the authorization policies on its port.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/trellismesh/trellis/internal/analyze"
	"github.com/trellismesh/trellis/internal/config"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: trellisctl <command> [flags]

commands:
  validate [-o text|json] [-strict] DIR   check a configuration directory
` + applyUsage + adminUsage

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "validate":
		return validate(args[1:], stdout, stderr)
	case "apply":
		return apply(args[1:], stdout, stderr)
	case "status":
		return status(args[1:], stdout, stderr)
	case "config-dump":
		return configDump(args[1:], stdout, stderr)
	case "describe":
		return describe(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "trellisctl: unknown command %q\n%s", args[0], usage)
	return 2
}

// report is validate's JSON output.
type report struct {
	Dir      string            `json:"dir"`
	Valid    bool              `json:"valid"`
	Errors   []*config.Error   `json:"errors"`
	Findings []analyze.Finding `json:"findings"`
	Counts   map[string]int    `json:"resources"`
}

func validate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("o", "text", "output format: text or json")
	strict := fs.Bool("strict", false, "exit 1 when the analysis has warnings, too")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || (*format != "text" && *format != "json") {
		fmt.Fprint(stderr, "usage: trellisctl validate [-o text|json] [-strict] DIR\n")
		return 2
	}
	dir := fs.Arg(0)
	rep := report{Dir: dir, Errors: []*config.Error{}, Findings: []analyze.Finding{}}
	set, err := config.LoadDir(dir)
	if err != nil {
		rep.Errors = config.Errors(err)
		if len(rep.Errors) == 0 { // not a resource problem: the directory itself
			fmt.Fprintln(stderr, "trellisctl:", err)
			return 1
		}
	} else {
		rep.Valid = true
		rep.Findings = analyze.Set(set)
		rep.Counts = map[string]int{
			config.KindServiceEntry:          len(set.ServiceEntries),
			config.KindWorkloadEntry:         len(set.WorkloadEntries),
			config.KindVirtualService:        len(set.VirtualServices),
			config.KindDestinationRule:       len(set.DestinationRules),
			config.KindPeerAuthentication:    len(set.PeerAuthentications),
			config.KindAuthorizationPolicy:   len(set.AuthorizationPolicies),
			config.KindRequestAuthentication: len(set.RequestAuthentications),
			config.KindTelemetry:             len(set.Telemetries),
		}
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "trellisctl:", err)
			return 1
		}
	} else {
		for _, e := range rep.Errors {
			fmt.Fprintln(stdout, "error:", e)
		}
		for _, f := range rep.Findings {
			fmt.Fprintf(stdout, "%s: %s\n", f.Severity, f)
		}
		if rep.Valid {
			fmt.Fprintf(stdout, "%s: valid (%d resources, %d findings)\n", dir, set.Len(), len(rep.Findings))
		} else {
			fmt.Fprintf(stdout, "%s: rejected (%d errors); the control plane would keep its last good configuration\n", dir, len(rep.Errors))
		}
	}
	switch {
	case !rep.Valid:
		return 1
	case *strict && slices.ContainsFunc(rep.Findings, func(f analyze.Finding) bool { return f.Severity == analyze.Warning }):
		return 1
	}
	return 0
}
