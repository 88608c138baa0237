package main

import "fmt"

// The mesh configuration is plain Istio YAML. The quickstart writes it to a
// temporary directory that the control plane watches; in a real deployment
// it is a directory you keep in version control (see examples/canary/config).

// destinationRule splits the greeter service into two subsets by the
// "version" label that every server registers (mesh.WithService sets it).
const destinationRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: greeter
spec:
  host: greeter
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`

// virtualService routes requests carrying "x-canary: true" to v2 and splits
// the rest between v1 and v2 by weight (the weights must sum to 100).
func virtualService(v1Weight, v2Weight int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: greeter
spec:
  hosts:
  - greeter
  http:
  - name: canary-header
    match:
    - headers:
        x-canary:
          exact: "true"
    route:
    - destination:
        host: greeter
        subset: v2
  - name: canary-split
    route:
    - destination:
        host: greeter
        subset: v1
      weight: %d
    - destination:
        host: greeter
        subset: v2
      weight: %d
`, v1Weight, v2Weight)
}
