package analyze

import (
	security "istio.io/api/security/v1beta1"

	"github.com/trellismesh/trellis/internal/config"
)

// securityFindings reports security policies that probably do not do what
// their author meant: an ALLOW policy with no rules (it allows nothing, so
// every request to the workloads it selects is denied), a DENY or AUDIT
// policy with no rules (it matches nothing), and a workload selector that
// no known workload matches (static endpoints and WorkloadEntries; a
// registered workload may still match at run time, hence Info).
func securityFindings(set *config.Set) []Finding {
	var out []Finding
	var known []map[string]string // labels of workloads the set defines, with their namespace as "\x00ns"
	for _, se := range set.ServiceEntries {
		for _, ep := range se.Spec.Endpoints {
			known = append(known, withNS(ep.Labels, se.Namespace))
		}
	}
	for _, we := range set.WorkloadEntries {
		known = append(known, withNS(we.Spec.Labels, we.Namespace))
	}
	selectsNone := func(m config.Meta, field string, labels map[string]string) {
		if len(labels) == 0 || m.Namespace == config.RootNamespace {
			return
		}
		for _, l := range known {
			if l["\x00ns"] == m.Namespace && selects(labels, l) {
				return
			}
		}
		f := finding(m, field, "selects no workload the configuration defines in namespace %s; it applies only to workloads that register with these labels", m.Namespace)
		f.Severity = Info
		out = append(out, f)
	}
	for _, ap := range set.AuthorizationPolicies {
		selectsNone(ap.Meta, "spec.selector.matchLabels", ap.Spec.GetSelector().GetMatchLabels())
		if len(ap.Spec.GetRules()) > 0 {
			continue
		}
		switch ap.Spec.GetAction() {
		case security.AuthorizationPolicy_ALLOW:
			if ap.DryRun() {
				out = append(out, finding(ap.Meta, "spec.rules", "a dry-run ALLOW policy with no rules would allow nothing: it reports every request to the workloads it selects as denied, and enforces nothing (write rules: [{}] to allow all)"))
				continue
			}
			out = append(out, finding(ap.Meta, "spec.rules", "an ALLOW policy with no rules allows nothing: every request to the workloads it selects is denied (write rules: [{}] to allow all)"))
		default:
			out = append(out, finding(ap.Meta, "spec.rules", "a %s policy with no rules matches no request", ap.Spec.GetAction()))
		}
	}
	for _, ra := range set.RequestAuthentications {
		selectsNone(ra.Meta, "spec.selector.matchLabels", ra.Spec.GetSelector().GetMatchLabels())
	}
	for _, pa := range set.PeerAuthentications {
		selectsNone(pa.Meta, "spec.selector.matchLabels", pa.Spec.GetSelector().GetMatchLabels())
	}
	return out
}

func withNS(labels map[string]string, ns string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	out["\x00ns"] = ns
	return out
}
