package config

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
)

// Kinds of resources the loader accepts.
const (
	KindServiceEntry    = "ServiceEntry"
	KindWorkloadEntry   = "WorkloadEntry"
	KindVirtualService  = "VirtualService"
	KindDestinationRule = "DestinationRule"

	KindPeerAuthentication    = "PeerAuthentication"
	KindAuthorizationPolicy   = "AuthorizationPolicy"
	KindRequestAuthentication = "RequestAuthentication"
)

// RootNamespace is the mesh's root namespace, as Istio's default
// (meshConfig.rootNamespace): PeerAuthentication, AuthorizationPolicy and
// RequestAuthentication resources in it apply mesh-wide.
const RootNamespace = "istio-system"

// DefaultNamespace is the namespace of a resource whose metadata names none.
const DefaultNamespace = "default"

// Meta identifies a resource and where it was read from.
type Meta struct {
	Kind        string
	Name        string
	Namespace   string
	Labels      map[string]string
	Annotations map[string]string
	// File and Line locate the start of the resource's YAML document.
	File string
	Line int
}

// String returns "Kind namespace/name".
func (m Meta) String() string { return m.Kind + " " + m.Namespace + "/" + m.Name }

// Error is a problem with one resource. Field is the path of the offending
// field inside the resource ("spec.http[0].route[1].weight"); it is empty when
// the problem is the resource as a whole.
type Error struct {
	File     string
	Line     int
	Resource string // "Kind namespace/name"; empty if the document has none yet
	Field    string
	Msg      string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Resource != "" {
		b.WriteString(": ")
		b.WriteString(e.Resource)
	}
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// ServiceEntry is a parsed ServiceEntry resource.
type ServiceEntry struct {
	Meta
	Spec *networking.ServiceEntry
}

// WorkloadEntry is a parsed WorkloadEntry resource.
type WorkloadEntry struct {
	Meta
	Spec *networking.WorkloadEntry
}

// VirtualService is a parsed VirtualService resource.
type VirtualService struct {
	Meta
	Spec *networking.VirtualService
}

// DestinationRule is a parsed DestinationRule resource.
type DestinationRule struct {
	Meta
	Spec *networking.DestinationRule
}

// PeerAuthentication is a parsed PeerAuthentication resource.
type PeerAuthentication struct {
	Meta
	Spec *security.PeerAuthentication
}

// AuthorizationPolicy is a parsed AuthorizationPolicy resource.
type AuthorizationPolicy struct {
	Meta
	Spec *security.AuthorizationPolicy
}

// RequestAuthentication is a parsed RequestAuthentication resource.
type RequestAuthentication struct {
	Meta
	Spec *security.RequestAuthentication
}

// Set is a validated set of resources. The zero Set is valid and empty. A Set
// is not modified after Load returns it and is safe for concurrent reads.
type Set struct {
	ServiceEntries   []*ServiceEntry
	WorkloadEntries  []*WorkloadEntry
	VirtualServices  []*VirtualService
	DestinationRules []*DestinationRule

	PeerAuthentications    []*PeerAuthentication
	AuthorizationPolicies  []*AuthorizationPolicy
	RequestAuthentications []*RequestAuthentication
	// Telemetries are Istio Telemetry resources (see Telemetry: only
	// their selector is accepted).
	Telemetries []*Telemetry
	// Files lists the files the Set was read from, sorted.
	Files []string
}

// Len returns the number of resources in the set.
func (s *Set) Len() int {
	return len(s.ServiceEntries) + len(s.WorkloadEntries) + len(s.VirtualServices) + len(s.DestinationRules) +
		len(s.PeerAuthentications) + len(s.AuthorizationPolicies) + len(s.RequestAuthentications) + len(s.Telemetries)
}

// MaxFileSize caps the size of one configuration file. A larger file is
// an error, read no further: hostile or runaway input must not exhaust the
// control plane's memory.
const MaxFileSize = 16 << 20

// LoadDir reads every *.yaml, *.yml and *.json file directly inside dir
// (files whose names start with "." are skipped) and returns the validated
// Set. If any resource is invalid it returns a nil Set and an error joining
// one *Error per problem (use errors.As or Errors to get them).
func LoadDir(dir string) (*Set, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() || !IsConfigFile(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		data, err := readCapped(p, MaxFileSize)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		files[p] = data
	}
	return Load(files)
}

// IsConfigFile reports whether a file of this name is read by LoadDir.
func IsConfigFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// Load parses and validates the given files (path to contents) as one Set.
func Load(files map[string][]byte) (*Set, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	set := &Set{Files: names}
	var errs []error
	for _, name := range names {
		errs = append(errs, parseFile(set, name, files[name])...)
	}
	if len(errs) == 0 {
		errs = validateSet(set)
	}
	// Deterministic order for logs and the admin page: by place, then field.
	slices.SortStableFunc(errs, func(a, b error) int {
		ea, okA := a.(*Error)
		eb, okB := b.(*Error)
		if !okA || !okB {
			return 0
		}
		return cmp.Or(strings.Compare(ea.File, eb.File), cmp.Compare(ea.Line, eb.Line), strings.Compare(ea.Field, eb.Field), strings.Compare(ea.Msg, eb.Msg))
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return set, nil
}

// Errors returns the *Error values joined in err, in order.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if u := errors.Unwrap(err); u != nil {
			walk(u)
		}
	}
	walk(err)
	return out
}

// readCapped reads the file at p, failing if it holds more than limit bytes.
func readCapped(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes, the most a configuration file may hold", p, limit)
	}
	return data, nil
}
