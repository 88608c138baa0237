package mtls_test

import (
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/trellismesh/trellis/internal/mtls"
)

// A client must name the servers it expects: there is no "any server of
// the trust domain".
func ExampleClientConfig() {
	_, err := mtls.ClientConfig(nil)
	fmt.Println(errors.Is(err, mtls.ErrNoExpectedIDs))
	// Output: true
}

// An Authorizer restricts which verified peers a server accepts.
func ExampleAuthorizeOneOf() {
	frontend := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/frontend")
	authorize := mtls.AuthorizeOneOf(frontend)
	fmt.Println(authorize(frontend))
	fmt.Println(authorize(spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/ratings")))
	// Output:
	// <nil>
	// "spiffe://example.org/ns/default/sa/ratings" is not an allowed ID
}
