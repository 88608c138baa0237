package translate

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellismesh/trellis/internal/config"
)

// A ConfigWorkload is an endpoint the configuration itself defines: an
// inline endpoint of a ServiceEntry, or a WorkloadEntry its
// workloadSelector picks.
type ConfigWorkload struct {
	// Host is the canonical host of the ServiceEntry.
	Host      string
	Namespace string
	Address   string
	// Ports are the ports the workload listens on.
	Ports []uint32
	// Identity is the workload's SPIFFE ID, from its serviceAccount, or
	// empty.
	Identity string
}

// WorkloadIdentity returns the SPIFFE ID Istio gives a workload of
// namespace ns running as serviceAccount: spiffe://<td>/ns/<ns>/sa/<sa>.
// It is empty if serviceAccount is.
func WorkloadIdentity(trustDomain, ns, serviceAccount string) string {
	if serviceAccount == "" {
		return ""
	}
	return "spiffe://" + cmp.Or(trustDomain, DefaultTrustDomain) + "/ns/" + ns + "/sa/" + serviceAccount
}

// ConfigWorkloads lists the endpoints the configuration defines, with the
// workload ports of each, in the order of the configuration.
func ConfigWorkloads(set *config.Set, trustDomain string) []ConfigWorkload {
	if set == nil {
		return nil
	}
	var out []ConfigWorkload
	for _, se := range set.ServiceEntries {
		for _, sw := range serviceEntryWorkloads(set, se) {
			w := sw.spec
			if w.Address == "" {
				continue
			}
			var ports []uint32
			for _, p := range se.Spec.Ports {
				ports = append(ports, cmp.Or(w.Ports[p.Name], p.TargetPort, p.Number))
			}
			slices.Sort(ports)
			ports = slices.Compact(ports)
			for _, h := range se.Spec.Hosts {
				out = append(out, ConfigWorkload{
					Host:      config.CanonicalHost(h, se.Namespace),
					Namespace: se.Namespace,
					Address:   w.Address,
					Ports:     ports,
					Identity:  WorkloadIdentity(trustDomain, se.Namespace, w.ServiceAccount),
				})
			}
		}
	}
	return out
}

// seWorkload is one workload of a ServiceEntry.
type seWorkload struct {
	what string // names it in warnings
	spec *networking.WorkloadEntry
}

// serviceEntryWorkloads returns the inline endpoints of se and the
// WorkloadEntries of its namespace that its workloadSelector picks.
func serviceEntryWorkloads(set *config.Set, se *config.ServiceEntry) []seWorkload {
	var workloads []seWorkload
	for i, w := range se.Spec.Endpoints {
		workloads = append(workloads, seWorkload{fmt.Sprintf("ServiceEntry %s/%s endpoints[%d]", se.Namespace, se.Name, i), w})
	}
	if sel := se.Spec.WorkloadSelector; sel != nil {
		for _, we := range set.WorkloadEntries {
			if we.Namespace == se.Namespace && selects(sel.Labels, we.Spec.Labels) {
				workloads = append(workloads, seWorkload{"WorkloadEntry " + we.Namespace + "/" + we.Name, we.Spec})
			}
		}
	}
	return workloads
}

// ServiceIdentities returns, by canonical host, the SPIFFE IDs the
// configuration binds to each service, as clients verify them: the
// ServiceEntry's spiffe:// subjectAltNames if it has any, else the service
// accounts of its workloads.
// The control plane lets only these identities register endpoints of a
// bound service. Each list is sorted and without duplicates.
func ServiceIdentities(set *config.Set, trustDomain string) map[string][]string {
	out := map[string][]string{}
	if set == nil {
		return out
	}
	for _, se := range set.ServiceEntries {
		// As clients verify (clientTLS): the ServiceEntry's subjectAltNames
		// replace its workloads' identities.
		var ids []string
		for _, san := range se.Spec.SubjectAltNames {
			if strings.HasPrefix(san, "spiffe://") {
				ids = append(ids, san)
			}
		}
		if len(se.Spec.SubjectAltNames) == 0 {
			for _, w := range serviceEntryWorkloads(set, se) {
				if id := WorkloadIdentity(trustDomain, se.Namespace, w.spec.ServiceAccount); id != "" {
					ids = append(ids, id)
				}
			}
		}
		if len(ids) == 0 {
			continue
		}
		for _, h := range se.Spec.Hosts {
			host := config.CanonicalHost(h, se.Namespace)
			out[host] = append(out[host], ids...)
		}
	}
	for host, ids := range out {
		slices.Sort(ids)
		out[host] = slices.Compact(ids)
	}
	return out
}
