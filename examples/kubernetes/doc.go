// Package kubernetes holds the manifests that run the Trellis control plane
// and a sample app on Kubernetes (see README.md); its test checks that they
// parse and agree with each other.
package kubernetes
