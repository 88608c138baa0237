package xdsserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// dashboardFiles are the dashboard's page, script and style sheet: plain
// HTML, CSS and JavaScript, nothing loaded from elsewhere.
//
//go:embed dashboard
var dashboardFiles embed.FS

// adminCookie carries a dashboard session for a browser, set by
// /dashboard when it is opened with ?token=.
const adminCookie = "trellis_admin_session"

// dashboardSession is how long a dashboard session lasts, in the cookie's
// Max-Age and in the session itself (a copied cookie dies as surely as a
// kept one): a working day of watching the dashboard, after which the
// browser needs the token again. A browser sends the cookie to every port
// of the host that set it, so it should not outlive the day it was for.
const dashboardSession = 8 * time.Hour

// tokenEqual reports whether got is the token want, in time that depends
// on neither (the lengths included: both are hashed first).
func tokenEqual(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// adminAuthorized reports whether r carries the admin token, as the header
// "Authorization: Bearer <token>", or a live session of the dashboard's
// cookie.
func adminAuthorized(r *http.Request, token string) bool {
	if scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") && tokenEqual(cred, token) {
		return true
	}
	c, err := r.Cookie(adminCookie)
	return err == nil && validSession(c.Value, token, time.Now())
}

// newSession returns a dashboard session ending at expiry:
// "v1.<expiry, Unix seconds>.<HMAC-SHA256 of it keyed by the token>". It
// proves its holder had the token, without being the token: the cookie
// that carries it is sent to other services of the same host, and a
// session taken from there opens the dashboard until it expires, not the
// token's other uses, and changing the token ends every session.
func newSession(token string, expiry time.Time) string {
	exp := strconv.FormatInt(expiry.Unix(), 10)
	return "v1." + exp + "." + sessionMAC(token, exp)
}

func sessionMAC(token, exp string) string {
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("trellis dashboard session\x00" + exp))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// validSession reports whether v is a session newSession made with token
// that has not expired at now.
func validSession(v, token string, now time.Time) bool {
	rest, ok := strings.CutPrefix(v, "v1.")
	if !ok {
		return false
	}
	exp, mac, ok := strings.Cut(rest, ".")
	if !ok {
		return false
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || !now.Before(time.Unix(unix, 0)) {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(sessionMAC(token, exp)))
}

// handleDashboard adds /dashboard and /debug/graph to the admin mux.
//
// /dashboard is a live page: the service graph from the load reports
// (/debug/graph), each service's endpoints and versions (/debug/registry,
// /debug/config_dump), client sync status (/debug/clients) and
// configuration errors, refreshed every 2 seconds. It is guarded like the
// /debug/ endpoints. With a token, a browser opens it once as
// /dashboard?token=TOKEN, which sets a session (not the token) in an
// HttpOnly, SameSite=Strict cookie (path /, Secure if served over TLS,
// Max-Age dashboardSession) and redirects to /dashboard, so the token
// leaves the address bar and the page and its requests to /debug/ carry
// the cookie.
func (s *Server) handleDashboard(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/graph", s.guard(s.serveGraph))
	static, _ := fs.Sub(dashboardFiles, "dashboard")
	files := http.FileServerFS(static)
	token := s.opts.adminToken
	page := func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		http.ServeFileFS(w, r, static, "index.html")
	}
	if token == "" {
		mux.HandleFunc("GET /dashboard", s.localOnly(page))
	} else {
		mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Has("token") {
				s.login(w, r, token)
				return
			}
			if !adminAuthorized(r, token) {
				s.metrics.adminRefused.WithLabelValues("token").Inc()
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusUnauthorized)
				w.Write([]byte("unauthorized: open /dashboard?token=TOKEN with the admin token\n"))
				return
			}
			page(w, r)
		})
	}
	mux.HandleFunc("GET /dashboard/", s.guard(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		http.StripPrefix("/dashboard", files).ServeHTTP(w, r)
	}))
}

// login is /dashboard?token=: with the right token, it sets a session
// cookie and redirects to /dashboard, dropping the query and the token
// with it.
func (s *Server) login(w http.ResponseWriter, r *http.Request, token string) {
	securityHeaders(w)
	if !tokenEqual(r.URL.Query().Get("token"), token) {
		s.metrics.adminRefused.WithLabelValues("token").Inc()
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: adminCookie, Value: newSession(token, time.Now().Add(dashboardSession)), Path: "/",
		MaxAge:   int(dashboardSession / time.Second),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/dashboard", http.StatusSeeOther)
}

// securityHeaders keeps the page to its own origin and out of frames and
// caches, and the address (which may have held the token) out of Referer
// headers.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}
