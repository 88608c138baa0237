// Package xdsserver is the Trellis control plane.
//
// A Server reads Istio resources (ServiceEntry, WorkloadEntry,
// VirtualService, DestinationRule) from a directory, takes registrations from
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
// cmd/xdsserver runs a Server with flags.
package xdsserver
