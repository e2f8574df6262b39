// Package ui is the node's web view of the mesh (DESIGN.md section 12): a
// page served at /ui/ on the API listener that draws the mesh as a graph,
// shows the selected node's details, peers, recent tasks and rates, and a
// trace as a waterfall, refreshed every second from the control API. Its
// assets are embedded in the binary; nothing is loaded from elsewhere.
//
// The assets hold no data and are served without the API token; every
// request the page makes for data carries the token the user entered once
// (kept in the browser's localStorage), under the API's usual rule.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// Handler serves the page and its assets under prefix (e.g. "/ui/").
func Handler(prefix string) http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.StripPrefix(prefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
}
