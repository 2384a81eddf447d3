package wire

import (
	"fmt"
	"strings"
)

// MaxLabel is the longest DNS label: 63 bytes.
const MaxLabel = 63

// IsLabel reports whether s is a label as the mesh uses them: 1 to 63
// lowercase letters, digits and '-', neither starting nor ending with '-'.
// Node names, service names and tags, tag names (after "tag:") and the
// policy's group and host names are labels, so each is one DNS label.
func IsLabel(s string) bool { return labelProblem(s) == "" }

// CheckLabel returns nil if s is a label, or an error that names what s
// is (such as "service name") and says what is wrong and where.
func CheckLabel(what, s string) error {
	if p := labelProblem(s); p != "" {
		return fmt.Errorf("bad %s %q: %s; want 1-63 lowercase letters, digits or '-', not starting or ending with '-'", what, s, p)
	}
	return nil
}

// CheckNodeName checks a node name, a label.
func CheckNodeName(s string) error { return CheckLabel("node name", s) }

// CheckTag checks a tag: "tag:" and a label, as in "tag:web".
func CheckTag(s string) error {
	name, ok := strings.CutPrefix(s, "tag:")
	if !ok {
		return fmt.Errorf("bad tag %q: want tag:NAME", s)
	}
	if p := labelProblem(name); p != "" {
		return fmt.Errorf("bad tag %q: %s; want tag:NAME with NAME 1-63 lowercase letters, digits or '-', not starting or ending with '-'", s, p)
	}
	return nil
}

// NormalizeTag returns s as a tag: "web" and "tag:web" are both "tag:web".
// The CLI and the UI read tags with it, so both accept the short form;
// CheckTag then checks the result.
func NormalizeTag(s string) string {
	if strings.HasPrefix(s, "tag:") {
		return s
	}
	return "tag:" + s
}

// labelProblem says what keeps s from being a label, "" if nothing.
func labelProblem(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > MaxLabel:
		return fmt.Sprintf("%d bytes, more than %d", len(s), MaxLabel)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '-' {
			continue
		}
		if c >= 0x80 {
			return fmt.Sprintf("non-ASCII byte 0x%02x at byte %d", c, i)
		}
		return fmt.Sprintf("%q at byte %d", c, i)
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return "starts or ends with '-'"
	}
	return ""
}
