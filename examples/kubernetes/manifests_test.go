package kubernetes

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/trellismesh/trellis/internal/config"
)

// strict decodes with the Kubernetes scheme, failing on unknown and
// duplicate fields.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// decodeAll decodes every document of a manifest file with the Kubernetes
// scheme, strictly: an unknown kind or field fails.
func decodeAll(t *testing.T, file string) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if err != nil {
			break
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := strict.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v\n%s", file, err, doc)
		}
		out = append(out, obj)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no objects", file)
	}
	return out
}

// TestManifests parses every manifest, and checks that the control plane
// runs with -kubernetes on three replicas, may read and write what it
// needs, and is where the app looks for it.
func TestManifests(t *testing.T) {
	var objs []runtime.Object
	for _, f := range []string{"control-plane.yaml", "app.yaml"} {
		objs = append(objs, decodeAll(t, f)...)
	}
	var (
		deployments []*appsv1.Deployment
		role        *rbacv1.ClusterRole
		service     *corev1.Service
	)
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			deployments = append(deployments, o)
		case *rbacv1.ClusterRole:
			role = o
		case *corev1.Service:
			if o.Name == "trellis-xdsserver" {
				service = o
			}
		}
	}
	if role == nil || service == nil || len(deployments) != 3 {
		t.Fatalf("manifests hold ClusterRole %v, control-plane Service %v, %d Deployments; want both and 3", role != nil, service != nil, len(deployments))
	}

	cp := deployments[0]
	if cp.Name != "trellis-xdsserver" || cp.Spec.Replicas == nil || *cp.Spec.Replicas != 3 {
		t.Errorf("control plane Deployment %s, replicas %v; want trellis-xdsserver with 3", cp.Name, cp.Spec.Replicas)
	}
	if args := cp.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "-kubernetes") {
		t.Errorf("control plane args %q lack -kubernetes", args)
	}
	for _, name := range []string{"POD_NAME", "POD_NAMESPACE"} {
		env := cp.Spec.Template.Spec.Containers[0].Env
		if !slices.ContainsFunc(env, func(e corev1.EnvVar) bool { return e.Name == name && e.ValueFrom != nil }) {
			t.Errorf("control plane lacks %s from the downward API", name)
		}
	}
	var ports []int32
	for _, p := range service.Spec.Ports {
		ports = append(ports, p.Port)
	}
	if !slices.Equal(ports, []int32{15010, 15012, 15014}) {
		t.Errorf("control plane Service ports = %v, want 15010, 15012, 15014", ports)
	}

	// What internal/kube reads and writes.
	need := map[string][]string{
		"/services": {"list", "watch"}, "/pods": {"list", "watch"}, "/nodes": {"list", "watch"},
		"discovery.k8s.io/endpointslices":          {"list", "watch"},
		"networking.istio.io/serviceentries":       {"list", "watch"},
		"networking.istio.io/virtualservices":      {"list", "watch"},
		"networking.istio.io/destinationrules":     {"list", "watch"},
		"networking.istio.io/workloadentries":      {"get", "list", "watch", "create", "update", "delete"},
		"security.istio.io/peerauthentications":    {"list", "watch"},
		"security.istio.io/authorizationpolicies":  {"list", "watch"},
		"security.istio.io/requestauthentications": {"list", "watch"},
		"telemetry.istio.io/telemetries":           {"list", "watch"},
	}
	for res, verbs := range need {
		group, resource, _ := strings.Cut(res, "/")
		for _, v := range verbs {
			ok := slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
				return slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, v)
			})
			if !ok {
				t.Errorf("ClusterRole does not grant %s on %s", v, res)
			}
		}
	}

	want := service.Name + "." + service.Namespace + ".svc.cluster.local:15010"
	for _, d := range deployments[1:] {
		env := d.Spec.Template.Spec.Containers[0].Env
		i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == "TRELLIS_CONTROL_PLANE" })
		if i < 0 || env[i].Value != want {
			t.Errorf("Deployment %s: TRELLIS_CONTROL_PLANE not %s", d.Name, want)
		}
	}
}

// TestIstioResources loads the Istio resources as the control plane does.
// (Their CRDs come from Istio's base chart.)
func TestIstioResources(t *testing.T) {
	files := map[string][]byte{}
	paths, _ := filepath.Glob("istio/*.yaml")
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = data
	}
	set, err := config.Load(files)
	if err != nil {
		t.Fatalf("config.Load(istio/) = %v", err)
	}
	if len(set.VirtualServices) != 1 || len(set.DestinationRules) != 1 {
		t.Errorf("istio/ holds %d VirtualServices and %d DestinationRules, want 1 each", len(set.VirtualServices), len(set.DestinationRules))
	}
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
