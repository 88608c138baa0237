package xdsserver

import (
	"encoding/json"
	"net/http"
	"strings"
)

// WithAdminToken makes the admin handler's /debug/ endpoints require the
// header "Authorization: Bearer <token>" (health and metrics stay open).
// Serve the admin handler on a loopback address, or give a token:
// cmd/xdsserver refuses a non-loopback -admin-addr without -admin-token.
func WithAdminToken(token string) Option {
	return optionFunc(func(o *options) { o.adminToken = token })
}

// guard wraps a /debug/ handler with the admin token check, if a token is
// set. A caller without the token learns nothing but the status.
func (s *Server) guard(h http.HandlerFunc) http.HandlerFunc {
	token := s.opts.adminToken
	if token == "" {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !adminAuthorized(r, token) { // the header, or the dashboard's cookie
			w.Header().Set("WWW-Authenticate", `Bearer realm="trellis-admin"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// serveClients is /debug/clients: every connected xDS client — node,
// stream mode, connected since, and per resource type what it subscribed
// to, the version it ACKed, its ACK and NACK counts and its last NACK with
// the reason. ?node=ID selects one client.
func (s *Server) serveClients(w http.ResponseWriter, r *http.Request) {
	clients := s.clients.snapshot()
	if node := r.URL.Query().Get("node"); node != "" {
		var out []ClientStatus
		for _, c := range clients {
			if c.Node == node {
				out = append(out, c)
			}
		}
		if len(out) == 0 {
			http.Error(w, "no connected client "+node, http.StatusNotFound)
			return
		}
		clients = out
	}
	writeJSON(w, clients)
}

// serveRegistry is /debug/registry: the endpoints workloads registered,
// with their labels and proven identities. ?service=NAME filters.
func (s *Server) serveRegistry(w http.ResponseWriter, r *http.Request) {
	svc := r.URL.Query().Get("service")
	out := []Registration{}
	for _, e := range s.reg.Endpoints() {
		if svc == "" || strings.EqualFold(e.Service, svc) {
			out = append(out, registrationOf(e))
		}
	}
	writeJSON(w, out)
}
