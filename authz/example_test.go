package authz_test

import (
	"fmt"

	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/trellismesh/trellis/authz"
	"github.com/trellismesh/trellis/internal/secpolicy"
)

// Translate an Istio AuthorizationPolicy that denies /admin to anyone outside
// the "ops" namespace, then authorize requests with it.
func ExampleEngine_Authorize() {
	deny := secpolicy.NamedAuthorizationPolicy{Name: "admin-ops-only", Namespace: "shop", Spec: &securityv1beta1.AuthorizationPolicy{
		Action: securityv1beta1.AuthorizationPolicy_DENY,
		Rules: []*securityv1beta1.Rule{{
			From: []*securityv1beta1.Rule_From{{Source: &securityv1beta1.Source{NotNamespaces: []string{"ops"}}}},
			To:   []*securityv1beta1.Rule_To{{Operation: &securityv1beta1.Operation{Paths: []string{"/admin", "/admin/*"}}}},
		}},
	}}
	rbacs, err := secpolicy.AuthorizationPolicies([]secpolicy.NamedAuthorizationPolicy{deny}, "cluster.local")
	if err != nil {
		fmt.Println(err)
		return
	}
	engine, err := authz.New(rbacs)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range []authz.Request{
		{Principal: "spiffe://cluster.local/ns/ops/sa/oncall", Method: "GET", Path: "/admin/stats"},
		{Principal: "spiffe://cluster.local/ns/web/sa/front", Method: "GET", Path: "//x/../%61dmin"},
		{Principal: "spiffe://cluster.local/ns/web/sa/front", Method: "GET", Path: "/%2Fadmin"},
		{Principal: "spiffe://cluster.local/ns/web/sa/front", Method: "GET", Path: "/cart"},
	} {
		d := engine.Authorize(&r)
		fmt.Printf("%-15s allowed=%v policy=%q\n", r.Path, d.Allowed, d.Policy)
	}
	// Output:
	// /admin/stats    allowed=true policy=""
	// //x/../%61dmin  allowed=false policy="shop/admin-ops-only[0]"
	// /%2Fadmin       allowed=false policy=""
	// /cart           allowed=true policy=""
}
