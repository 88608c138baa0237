// Package xdsserver is the Trellis control plane.
//
// A Server reads Istio resources (ServiceEntry, WorkloadEntry,
// VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy,
// RequestAuthentication) from a directory, takes registrations from
// workloads over its registration API, translates both into standard xDS
// resources (LDS, RDS, CDS, EDS) and serves them over ADS with
// go-control-plane, state of the world and delta, with per-resource versions:
// a change pushes only the resources it touched. Any xDS gRPC client can use
// it, with a bootstrap naming its address and a target such as
// "xds:///reviews:9080".
//
//	srv, err := xdsserver.New(xdsserver.WithConfigDir("./mesh"))
//	if err != nil { ... }
//	lis, _ := net.Listen("tcp", "127.0.0.1:15010")
//	go http.ListenAndServe("127.0.0.1:15014", srv.AdminHandler())
//	err = srv.Serve(lis)
//
// Configuration is loaded as a whole: a directory with any invalid resource
// is rejected and the last good configuration stays in force; the errors,
// each naming file, resource and field, are logged, counted in metrics and
// shown at /debug/config_dump.
//
// With WithDataDir (or WithCAFiles) the Server also runs the mesh CA: a
// root generated once and kept in the directory, signing SPIFFE X.509
// SVIDs (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>) over
// Istio's certificate API on the secure port, where xDS and registration
// are served over TLS as well:
//
//	srv, err := xdsserver.New(
//		xdsserver.WithDataDir("/var/lib/trellis"),
//		xdsserver.WithJoinTokens(map[string]xdsserver.WorkloadIdentity{
//			token: {Namespace: "default", ServiceAccount: "reviews"},
//		}))
//	secure, _ := net.Listen("tcp", "127.0.0.1:15012")
//	go srv.ServeSecure(secure)
//
// The CA decides each identity from who asks — the identity a join token
// is bound to, or the one in the caller's current certificate when it
// renews — never from the request; /debug/ca lists what it issued. Join
// tokens may expire or be single-use (WorkloadIdentity), and renewals end
// WithMaxRenewalChain after the token was last presented.
//
// The Server believes only what it authenticated: a workload registers on
// the secure port with its certificate, whose SPIFFE ID becomes the
// endpoint's identity and decides which services it may register; an
// endpoint belongs to whoever registered it. Registrations without a
// certificate are refused unless WithInsecureRegistration opens the mesh.
// docs/SECURITY.md has the rules. Each endpoint has a server listener,
// "grpc/server?xds.resource.listening_address=IP:PORT", with mTLS and
// plaintext filter chains by its PeerAuthentication mode and the RBAC and
// jwt_authn filters of the policies selecting it; clusters carry client
// mTLS to the endpoints' identities when a DestinationRule asks for
// ISTIO_MUTUAL, or automatically for the endpoints that have one.
//
// On Kubernetes, WithKubernetes reads the same Istio resources as custom
// resources (checked as strictly as files, errors naming
// "k8s:Kind/namespace/name"), Services and EndpointSlices as endpoints,
// and keeps registrations as WorkloadEntries that every replica serves:
//
//	srv, err := xdsserver.New(xdsserver.WithKubernetes("")) // in-cluster
//
// Without Kubernetes, WithStore keeps registrations in etcd so that
// several replicas serve the same mesh and a workload can move to any of
// them; without WithConfigDir the configuration is read from etcd too
// (written with "trellisctl apply -store URI DIR"):
//
//	srv, err := xdsserver.New(xdsserver.WithStore("etcd://etcd-0:2379,etcd-1:2379/trellis"))
//
// cmd/xdsserver runs a Server with flags.
package xdsserver
