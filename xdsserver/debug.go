package xdsserver

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// WithAdminToken makes the admin handler's /debug/ endpoints and the
// dashboard require the header "Authorization: Bearer <token>" (or the
// dashboard's session cookie, see AdminHandler); /healthz, /readyz and,
// unless WithMetricsBehindToken, /metrics stay open. With a token, the
// token is what protects the admin endpoint, whatever address it is served
// on and whatever Host a request names. Without one, the admin endpoint
// serves only loopback (see AdminHandler); cmd/xdsserver refuses a
// non-loopback -admin-addr without -admin-token.
func WithAdminToken(token string) Option {
	return optionFunc(func(o *options) { o.adminToken = token })
}

// WithMetricsBehindToken puts /metrics behind the admin token too, as a
// bearer token (Prometheus: authorization.credentials_file in the scrape
// config). It needs WithAdminToken. Without it /metrics is open to any
// scraper that reaches a tokened admin endpoint.
func WithMetricsBehindToken() Option {
	return optionFunc(func(o *options) { o.metricsBehindToken = true })
}

// guard wraps the handler of an admin path that reveals something. With
// a token the request must carry it; without one it must be local (see
// local). A refused caller learns nothing but the status.
func (s *Server) guard(h http.HandlerFunc) http.HandlerFunc {
	token := s.opts.adminToken
	if token == "" {
		return s.localOnly(h)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !adminAuthorized(r, token) { // the header, or the dashboard's cookie
			s.metrics.adminRefused.WithLabelValues("token").Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="trellis-admin"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		noStore(w)
		h(w, r)
	}
}

// localOnly wraps h so that it serves only local requests: those a
// browser page of another site cannot make (see local).
func (s *Server) localOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if reason := local(r); reason != "" {
			s.metrics.adminRefused.WithLabelValues(reason).Inc()
			s.log.Debug("admin: refused a request without a token", "reason", reason, "host", r.Host, "remote", r.RemoteAddr, "path", r.URL.Path)
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		noStore(w)
		h(w, r)
	}
}

// local says why r is not a local request, or "" if it is. A local
// request names a loopback host — "localhost", an address of 127.0.0.0/8
// or [::1], with or without a port — as its Host (or, in absolute form,
// its target's authority, which replaces the Host header): a page of
// attacker.example whose name was re-pointed at 127.0.0.1 (DNS rebinding)
// sends Host: attacker.example. And it came on a connection accepted on
// a loopback address (or a Unix socket), if it came through net/http's
// Server: a Host is only a claim, and a remote client could make it.
func local(r *http.Request) string {
	if !loopbackHost(r.Host) {
		return "host"
	}
	switch a := r.Context().Value(http.LocalAddrContextKey).(type) {
	case nil: // not from a net/http Server: the Host is all there is
	case *net.TCPAddr:
		if !a.IP.IsLoopback() {
			return "connection"
		}
	case *net.UnixAddr:
	case net.Addr:
		if ap, err := netip.ParseAddrPort(a.String()); err != nil || !ap.Addr().Unmap().IsLoopback() {
			return "connection"
		}
	}
	return ""
}

// loopbackHost reports whether hostport, a Host header value, names
// loopback: "localhost" (any case) or a loopback IP address, IPv6 in
// brackets, with an optional numeric port. "127.0.0.1.", "localhost." and
// names under localhost are not accepted: only what cannot be anyone
// else's.
func loopbackHost(hostport string) bool {
	host, port := hostport, ""
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		host, port = hostport[:i], hostport[i+1:]
	}
	if strings.Trim(port, "0123456789") != "" {
		return false
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		ip, err := netip.ParseAddr(host[1 : len(host)-1])
		return err == nil && ip.Is6() && ip.Zone() == "" && ip.Unmap().IsLoopback()
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Is4() && ip.IsLoopback()
}

// noStore keeps an admin response out of caches and from being sniffed
// into something a page of another origin could run.
func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
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
