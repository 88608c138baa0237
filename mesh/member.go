package mesh

import (
	"context"
	"sync"

	"github.com/trellismesh/trellis/internal/register"
)

// member is what a mesh server, gRPC or HTTP, holds while it is in the
// mesh: its registrations, its workload identity and the policies of its
// ports. Servers embed it; mu guards the fields and whatever else the
// server adds.
type member struct {
	mu       sync.Mutex
	closed   bool
	id       *workloadIdentity
	regs     []*register.Client
	policies policySet
}

// leave marks the server closed and deregisters its endpoints, waiting for
// the control plane within ctx (a done ctx deregisters without waiting).
func (m *member) leave(ctx context.Context) {
	m.mu.Lock()
	m.closed = true
	regs := m.regs
	m.regs = nil
	m.mu.Unlock()
	for _, r := range regs {
		r.Stop(ctx)
	}
}

// leaveNow is leave without waiting for the control plane.
func (m *member) leaveNow() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.leave(ctx)
}

// isClosed reports whether the server has left the mesh.
func (m *member) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// release stops following policies and releases the identity, once the
// server has stopped.
func (m *member) release() {
	m.mu.Lock()
	id := m.id
	m.id = nil
	m.mu.Unlock()
	m.policies.closeAll()
	releaseIdentity(id)
}
