// Package oneline flattens multi-line messages to one line, so that every
// error the node reports (CLI stderr, task records, API answers) is a single
// line naming the cause. go-libp2p's dial errors, for one, list one failed
// address per line ("\n  * [addr] reason").
package oneline

import "strings"

// Flatten trims each line of s of its indentation and list bullet and joins
// the non-empty lines with "; ", or with a space after a line ending in a
// colon. A string without line breaks is returned unchanged.
func Flatten(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for line := range strings.Lines(strings.ReplaceAll(s, "\r", "\n")) {
		line = strings.TrimSpace(line)
		line = strings.TrimSpace(strings.TrimPrefix(line, "* "))
		if line == "" {
			continue
		}
		if b.Len() > 0 {
			if strings.HasSuffix(b.String(), ":") {
				b.WriteByte(' ')
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(line)
	}
	return b.String()
}
