package xdsserver

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDashboardToken: /dashboard?token= with the right token sets the
// cookie and redirects to /dashboard; the cookie then opens the page, its
// assets and the /debug/ endpoints; a wrong token or none opens nothing.
func TestDashboardToken(t *testing.T) {
	s, err := New(WithAdminToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := s.AdminHandler()
	get := func(path string, cookie *http.Cookie) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, path := range []string{"/dashboard", "/dashboard?token=wrong", "/dashboard/app.js", "/debug/graph"} {
		if rec := get(path, nil); rec.Code != http.StatusUnauthorized {
			t.Errorf("GET %s = %d, want 401", path, rec.Code)
		}
	}
	if rec := get("/debug/graph", &http.Cookie{Name: adminCookie, Value: "wrong"}); rec.Code != http.StatusUnauthorized {
		t.Errorf("GET /debug/graph with a wrong cookie = %d, want 401", rec.Code)
	}
	rec := get("/dashboard?token=s3cret", nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/dashboard" {
		t.Fatalf("GET /dashboard?token=s3cret = %d to %q, want 303 to /dashboard", rec.Code, rec.Header().Get("Location"))
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != adminCookie || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookies = %v, want one HttpOnly SameSite=Strict %s", cookies, adminCookie)
	}
	for path, want := range map[string]string{
		"/dashboard":           "<svg id=\"graph\"",
		"/dashboard/app.js":    "/debug/graph",
		"/dashboard/style.css": "#graph",
		"/debug/graph":         "\"edges\"",
		"/debug/config_dump":   "\"config\"",
	} {
		rec := get(path, cookies[0])
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET %s with the cookie = %d, body without %q", path, rec.Code, want)
		}
	}
	if csp := get("/dashboard", cookies[0]).Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy = %q, want default-src 'self'", csp)
	}
}
