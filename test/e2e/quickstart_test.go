package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/test/lab"
)

// quickstartDoc is the document TestQuickstart follows.
const quickstartDoc = "../../docs/quickstart.md"

// docBlock is one ```sh block of a document and the output it shows.
type docBlock struct {
	line   int    // where the block starts
	host   string // the VM it runs on ("on: HOST")
	until  string // "background until: TEXT": a daemon, started and waited for until its output has TEXT
	retry  bool   // "retry": rerun until it succeeds with the output shown
	cmd    string
	output []string // the lines of the ```output block after it (nil: none shown)
	outAt  int      // where the output block starts
}

// markerRE matches the comment on the line before an sh block.
var markerRE = regexp.MustCompile(`^<!-- (.*) -->$`)

// docBlocks reads the sh blocks of a Markdown file. Every sh block needs a
// marker naming its host; an ```output block belongs to the sh block right
// before it; a block without a language is refused (is it output?).
func docBlocks(t *testing.T, path string) []docBlock {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []docBlock
	var info, marker, body string
	inBlock, start, lastFence := false, 0, ""
	for i, line := range strings.Split(string(b), "\n") {
		at := fmt.Sprintf("%s:%d", filepath.Base(path), start) // of the block that ends here
		switch {
		case !inBlock && strings.HasPrefix(line, "```"):
			inBlock, start, body = true, i+1, ""
			info = strings.TrimPrefix(line, "```")
		case inBlock && line == "```":
			inBlock = false
			switch info {
			case "sh":
				blk := docBlock{line: start, cmd: body}
				parseMarker(t, at, marker, &blk)
				out = append(out, blk)
			case "output":
				if lastFence != "sh" {
					t.Fatalf("%s: an output block must follow the sh block whose output it shows", at)
				}
				out[len(out)-1].output = strings.Split(strings.TrimRight(body, "\n"), "\n")
				out[len(out)-1].outAt = start
			case "":
				t.Fatalf("%s: a block without a language: mark output ```output", at)
			}
			lastFence = info
		case inBlock:
			body += line + "\n"
		default:
			marker = line
		}
	}
	return out
}

// parseMarker reads "on: HOST", "background until: TEXT" and "retry",
// separated by ";", from the comment before an sh block.
func parseMarker(t *testing.T, at, marker string, blk *docBlock) {
	t.Helper()
	m := markerRE.FindStringSubmatch(marker)
	if m == nil {
		t.Fatalf("%s: an sh block needs a comment before it naming its host: <!-- on: HOST -->", at)
	}
	for _, f := range strings.Split(m[1], ";") {
		f = strings.TrimSpace(f)
		switch {
		case strings.HasPrefix(f, "on: "):
			blk.host = strings.TrimPrefix(f, "on: ")
		case strings.HasPrefix(f, "background until: "):
			blk.until = strings.TrimPrefix(f, "background until: ")
		case f == "retry":
			blk.retry = true
		default:
			t.Fatalf("%s: unknown marker %q (want on: HOST, background until: TEXT, retry)", at, f)
		}
	}
	if blk.host == "" {
		t.Fatalf("%s: the marker names no host (on: HOST)", at)
	}
}

// TestQuickstart follows docs/quickstart.md on namespace hosts: each sh
// block runs, in order, on the VM its marker names, and fails the test if
// it fails or if its output lacks the shape the doc shows (see
// outputMissing). Only what must differ in a lab is changed: see
// docRun.subst.
func TestQuickstart(t *testing.T) {
	lab.Require(t, "ip", "wg")
	blocks := docBlocks(t, quickstartDoc)
	shown := 0
	for _, b := range blocks {
		if b.output != nil {
			shown++
		}
	}
	if len(blocks) < 10 || shown < 5 {
		t.Fatalf("%s has %d sh blocks, %d with their output: is it still marked up?", quickstartDoc, len(blocks), shown)
	}
	r := newDocRun(t, blocks)
	for _, b := range blocks {
		r.run(b)
	}
}

// docRun is a lab with a host for every VM a document names.
type docRun struct {
	t     *testing.T
	lab   *lab.Lab
	hosts map[string]*docHost
	vars  map[string]string // shell variables set by blocks, passed to the later ones
}

// docHost is a VM of the document.
type docHost struct {
	*lab.Host
	root  string // its file system: the doc's /var/lib, /etc and /run are under it
	iface string // the interface of an agent on it
}

func newDocRun(t *testing.T, blocks []docBlock) *docRun {
	t.Helper()
	r := &docRun{t: t, lab: lab.New(t), hosts: map[string]*docHost{}, vars: map[string]string{}}
	for _, b := range blocks {
		if r.hosts[b.host] != nil {
			continue
		}
		h := &docHost{
			Host:  r.lab.AddHost(b.host),
			root:  filepath.Join(t.TempDir(), b.host),
			iface: r.lab.Prefix() + strings.ReplaceAll(b.host, "-", ""),
		}
		for _, d := range []string{"etc", "run", "var/lib"} {
			if err := os.MkdirAll(filepath.Join(h.root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		// A VM of the lab has no resolver to forward names to.
		if err := h.WriteEtc("resolv.conf", nil); err != nil {
			t.Fatal(err)
		}
		r.hosts[b.host] = h
	}
	if r.hosts["coord"] == nil {
		t.Fatal("no block runs on coord")
	}
	return r
}

// subst is every change made to the doc's commands for the lab: the VMs'
// addresses, their disks (each host's /var/lib, /etc/wiremesh and
// /run/wiremesh under a directory of its own), and the interface name:
// WireGuard's sockets in /var/run/wireguard are shared by all namespaces,
// so agents of the lab (and of parallel tests) need names of their own.
// `wiremesh` is the binary built for this run, first on PATH.
func (r *docRun) subst(h *docHost) *strings.Replacer {
	return strings.NewReplacer(
		"10.0.0.10", r.hosts["coord"].Addr.String(),
		"/var/lib/", h.root+"/var/lib/",
		"/etc/wiremesh", h.root+"/etc/wiremesh",
		"/run/wiremesh", h.root+"/run/wiremesh",
		"wiremesh agent ", "wiremesh agent --interface "+h.iface+" ",
		"wm0", h.iface,
	)
}

// env is the environment of a block: the test's, with the built wiremesh
// first on PATH and the variables earlier blocks set.
func (r *docRun) env() []string {
	env := append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	for k, v := range r.vars {
		env = append(env, k+"="+v)
	}
	return env
}

// run runs one block and checks its output.
func (r *docRun) run(b docBlock) {
	t := r.t
	t.Helper()
	h := r.hosts[b.host]
	cmd := r.subst(h).Replace(b.cmd)
	at := fmt.Sprintf("docs/quickstart.md:%d: on %s", b.line, b.host)
	t.Logf("%s: %s", at, strings.TrimSpace(cmd))
	if b.until != "" {
		r.start(at, h, cmd, b)
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := r.shell(h, cmd)
		missing := outputMissing(b.output, out)
		switch {
		case err == nil && missing == "":
			return
		case b.retry && time.Now().Before(deadline):
			time.Sleep(200 * time.Millisecond)
		case err != nil:
			t.Fatalf("%s: %v\n%s\n%s", at, err, cmd, out)
		default:
			t.Fatalf("%s: the output has no line like %q (docs/quickstart.md:%d shows it):\n%s", at, missing, b.outAt, out)
		}
	}
}

// assignRE finds the shell variables a block sets.
var assignRE = regexp.MustCompile(`(?m)^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=`)

// shell runs cmd with sh -e in the host's root directory and returns its
// output (stdout and stderr); the variables it sets are kept for later
// blocks.
func (r *docRun) shell(h *docHost, cmd string) (string, error) {
	varsFile := filepath.Join(r.t.TempDir(), "vars")
	script := "cd '" + h.root + "'\n" + cmd
	for _, m := range assignRE.FindAllStringSubmatch(cmd, -1) {
		script += fmt.Sprintf("printf '%%s\\0' \"%s=$%s\" >>'%s'\n", m[1], m[1], varsFile)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "ip", "netns", "exec", h.NS, "sh", "-ec", script)
	c.Env = r.env()
	c.WaitDelay = time.Second
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), err
	}
	b, _ := os.ReadFile(varsFile)
	for _, kv := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			r.vars[k] = v
		}
	}
	return string(out), nil
}

// start runs a daemon's block (one command) in the background and waits
// until its output has b.until; the lab stops it at the end.
func (r *docRun) start(at string, h *docHost, cmd string, b docBlock) {
	t := r.t
	t.Helper()
	if lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(cmd, "\\\n", "")), "\n"); len(lines) != 1 {
		t.Fatalf("%s: a background block must be one command, not %d", at, len(lines))
	}
	p := h.Start(t, fmt.Sprintf("quickstart.md:%d", b.line), r.env(), "sh", "-c", "cd '"+h.root+"' && exec "+cmd)
	if err := p.WaitLog(b.until, 30*time.Second); err != nil {
		t.Fatalf("%s: %v\n%s\n%s", at, err, cmd, p.Log())
	}
	if missing := outputMissing(b.output, p.Log()); missing != "" {
		t.Fatalf("%s: the output has no line like %q (docs/quickstart.md:%d shows it):\n%s", at, missing, b.outAt, p.Log())
	}
}

var (
	// lineKeyRE matches a line that starts with a key: "node: ...",
	// "  public key: ...", "CA certificate: ...".
	lineKeyRE = regexp.MustCompile(`^\s*([A-Za-z][A-Za-z ]*):(\s|$)`)
	// cellSepRE separates the columns of a table.
	cellSepRE = regexp.MustCompile(`\s{2,}`)
	// headerCellRE matches a column header: "PEER", "RX / TX".
	headerCellRE = regexp.MustCompile(`^[A-Z][A-Z /]*$`)
)

// outputMissing returns the first line of shown (an output block of the
// doc) that got lacks, or "" if got has them all in order. Lines are
// compared by shape, not value: a table header by its columns, each row
// under it only by being there (a row's values vary), a "key: ..." line by
// its key, any other line by its first word (a first word ending in "..."
// by that prefix). got may have more lines than the doc shows.
func outputMissing(shown []string, got string) string {
	lines := strings.Split(got, "\n")
	inTable := false // want is a row of the table whose header matched last
	for _, want := range shown {
		switch {
		case strings.TrimSpace(want) == "":
			inTable = false
		case inTable:
			if len(lines) == 0 || strings.TrimSpace(lines[0]) == "" {
				return want
			}
			lines = lines[1:]
		default:
			i := slices.IndexFunc(lines, func(l string) bool { return sameShape(want, l) })
			if i < 0 {
				return want
			}
			lines = lines[i+1:]
			inTable = tableHeader(want) != nil
		}
	}
	return ""
}

// sameShape reports whether the line got has the shape of want: see
// outputMissing.
func sameShape(want, got string) bool {
	if h := tableHeader(want); h != nil {
		return slices.Equal(h, tableHeader(got))
	}
	if m := lineKeyRE.FindStringSubmatch(want); m != nil {
		g := lineKeyRE.FindStringSubmatch(got)
		return g != nil && g[1] == m[1]
	}
	w, g := strings.Fields(want), strings.Fields(got)
	if len(g) == 0 {
		return false
	}
	if p, ok := strings.CutSuffix(w[0], "..."); ok {
		return strings.HasPrefix(g[0], p)
	}
	return w[0] == g[0]
}

// tableHeader returns the columns of a table's header line (two or more
// upper-case names apart by two spaces or more), or nil.
func tableHeader(line string) []string {
	cells := cellSepRE.Split(strings.TrimSpace(line), -1)
	if len(cells) < 2 {
		return nil
	}
	for _, c := range cells {
		if !headerCellRE.MatchString(c) {
			return nil
		}
	}
	return cells
}

// TestOutputShape checks the comparison TestQuickstart makes: values may
// differ, keys, headers and first words may not, and lines may be added.
func TestOutputShape(t *testing.T) {
	status := `node:        web-1 100.64.0.1 fd77:6d65:7368::1
interface:   wm3fa2web1, port 51820
policy:      version 1, 1 inbound rules for this node

PEER  ADDRESS     ONLINE  ENDPOINT            HANDSHAKE  RX / TX            DENIED  RTT    SERVICES
db-1  100.64.0.2  yes     198.51.100.3:51820  1s ago     1.2 KiB / 1.3 KiB  0       400µs  -`
	for _, tc := range []struct {
		shown   string
		missing string
	}{
		{"node:        web-1 100.64.0.9\npolicy:      none", ""},
		{"interface:   wm0, port 51820\nnode:        web-1", "node:        web-1"}, // order
		{"node: web-1\ncoordinator: https://10.0.0.10:8443, connected", "coordinator: https://10.0.0.10:8443, connected"},
		{"PEER  ADDRESS  ONLINE  ENDPOINT  HANDSHAKE  RX / TX  DENIED  RTT  SERVICES\ndb-1  100.64.0.2", ""},
		{"PEER  ADDRESSES  ENDPOINT  HANDSHAKE  RX  TX", "PEER  ADDRESSES  ENDPOINT  HANDSHAKE  RX  TX"}, // an old header
		{"web-2  100.64.0.3", "web-2  100.64.0.3"},
		{"PEER  ADDRESS  ONLINE  ENDPOINT  HANDSHAKE  RX / TX  DENIED  RTT  SERVICES\ndb-2  x\nweb-2  y", "web-2  y"}, // one row too many
		{"db-...  ...", ""},
		{"web-...", "web-..."},
	} {
		if got := outputMissing(strings.Split(tc.shown, "\n"), status); got != tc.missing {
			t.Errorf("shown %q: missing %q, want %q", tc.shown, got, tc.missing)
		}
	}
}
