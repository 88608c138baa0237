package xdsserver

import (
	"crypto/subtle"
	"embed"
	"io/fs"
	"net/http"
)

// dashboardFiles are the dashboard's page, script and style sheet: plain
// HTML, CSS and JavaScript, nothing loaded from elsewhere.
//
//go:embed dashboard
var dashboardFiles embed.FS

// adminCookie carries the admin token for a browser, set by /dashboard when
// it is opened with ?token=.
const adminCookie = "trellis_admin_token"

// adminAuthorized reports whether r carries the admin token, as the header
// "Authorization: Bearer <token>" or as the cookie /dashboard sets.
func adminAuthorized(r *http.Request, token string) bool {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+token)) == 1 {
		return true
	}
	c, err := r.Cookie(adminCookie)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(token)) == 1
}

// handleDashboard adds /dashboard and /debug/graph to the admin mux.
//
// /dashboard is a live page: the service graph from the load reports
// (/debug/graph), each service's endpoints and versions (/debug/registry,
// /debug/config_dump), client sync status (/debug/clients) and
// configuration errors, refreshed every 2 seconds. It is guarded like the
// /debug/ endpoints; a browser opens it once as /dashboard?token=TOKEN,
// which sets the token in an HttpOnly, SameSite=Strict cookie (path /) and
// redirects to /dashboard, so the token leaves the address bar and the page
// and its requests to /debug/ carry the cookie.
func (s *Server) handleDashboard(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/graph", s.guard(s.serveGraph))
	static, _ := fs.Sub(dashboardFiles, "dashboard")
	files := http.FileServerFS(static)
	token := s.opts.adminToken
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.URL.Query().Has("token") {
			if subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("token")), []byte(token)) != 1 {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			http.SetCookie(w, &http.Cookie{
				Name: adminCookie, Value: token, Path: "/",
				HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
			})
			http.Redirect(w, r, "/dashboard", http.StatusSeeOther)
			return
		}
		if token != "" && !adminAuthorized(r, token) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte("unauthorized: open /dashboard?token=TOKEN with the admin token\n"))
			return
		}
		securityHeaders(w)
		http.ServeFileFS(w, r, static, "index.html")
	})
	mux.HandleFunc("GET /dashboard/", s.guard(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		http.StripPrefix("/dashboard", files).ServeHTTP(w, r)
	}))
}

// securityHeaders keeps the page to its own origin and out of frames, and
// the address (which may have held the token) out of Referer headers.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}
