package pick_test

import (
	"errors"
	"fmt"

	"github.com/trellismesh/trellis/balancer/pick"
)

func Example() {
	p := pick.New(pick.Config{Policy: pick.RoundRobin, MaxRequests: 2}, []pick.Endpoint{
		{Address: "10.0.0.1:8080"},
		{Address: "10.0.0.2:8080"},
	})
	a, doneA, _ := p.Pick(0)
	b, doneB, _ := p.Pick(0)
	fmt.Println("two endpoints in turn:", a.Address != b.Address)

	// A third request while two are outstanding trips the circuit breaker.
	_, _, err := p.Pick(0)
	fmt.Println(errors.Is(err, pick.ErrOverloaded))

	doneA(pick.Success)
	doneB(pick.ResultForStatus(503))
	_, done, err := p.Pick(0)
	fmt.Println(err)
	done(pick.Success)
	// Output:
	// two endpoints in turn: true
	// true
	// <nil>
}
