package coordinator

import "net/http"

// mountUI adds the web UI to mux.
func (c *Coordinator) mountUI(mux *http.ServeMux) {}
