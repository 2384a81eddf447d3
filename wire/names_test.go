package wire

import (
	"strings"
	"testing"
	"time"
)

func TestLabels(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		want string // in the error
	}{
		{"a", true, ""},
		{"web-1", true, ""},
		{"0", true, ""},
		{strings.Repeat("x", 63), true, ""},
		{"", false, "empty"},
		{strings.Repeat("x", 64), false, "64 bytes, more than 63"},
		{"Web", false, `'W' at byte 0`},
		{"a_b", false, `'_' at byte 1`},
		{"a.b", false, `'.' at byte 1`},
		{"é", false, "non-ASCII byte 0xc3 at byte 0"},
		{"-a", false, "starts or ends with '-'"},
		{"a-", false, "starts or ends with '-'"},
		{"a b", false, `' ' at byte 1`},
	} {
		if got := IsLabel(tc.in); got != tc.ok {
			t.Errorf("IsLabel(%q) = %v, want %v", tc.in, got, tc.ok)
		}
		err := CheckLabel("service name", tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("CheckLabel(%q) = %v, want ok %v", tc.in, err, tc.ok)
			continue
		}
		if err != nil && (!strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "bad service name")) {
			t.Errorf("CheckLabel(%q) = %q, want it to name the service name and say %q", tc.in, err, tc.want)
		}
	}
	if err := CheckNodeName("Bad_Name"); err == nil || !strings.Contains(err.Error(), `bad node name "Bad_Name": 'B' at byte 0`) {
		t.Errorf("CheckNodeName: %v", err)
	}
}

func TestCheckTag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" for valid
	}{
		{"tag:web", ""},
		{"tag:a-1", ""},
		{"web", "want tag:NAME"},
		{"tag:", "empty"},
		{"tag:Web", `'W' at byte 0`},
		{"TAG:web", "want tag:NAME"},
		{"tag:web-", "starts or ends with '-'"},
	} {
		err := CheckTag(tc.in)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckTag(%q) = %v", tc.in, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckTag(%q) = %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

// TestNormalizeTag: the CLI and the UI read "web" as "tag:web".
func TestNormalizeTag(t *testing.T) {
	for in, want := range map[string]string{"web": "tag:web", "tag:web": "tag:web", "": "tag:"} {
		if got := NormalizeTag(in); got != want {
			t.Errorf("NormalizeTag(%q) = %q, want %q", in, got, want)
		}
	}
	if err := CheckTag(NormalizeTag("Web")); err == nil {
		t.Error("NormalizeTag made a bad tag pass CheckTag")
	}
}

// TestLastSeen: an online node was last seen "now", in the CLI and the UI.
func TestLastSeen(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		online bool
		last   time.Time
		want   string
	}{
		{true, now.Add(-3 * time.Second), "now"},
		{false, now.Add(-3 * time.Second), "3s ago"},
		{false, now.Add(-3 * time.Hour), "3h ago"},
		{false, now.Add(-72 * time.Hour), "3d ago"},
		{false, time.Time{}, "never"},
	} {
		if got := LastSeen(tc.online, tc.last, now); got != tc.want {
			t.Errorf("LastSeen(%v, %v) = %q, want %q", tc.online, tc.last, got, tc.want)
		}
	}
}
