package tracing

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Trace is a whole trace as assembled from the spans of every node that
// took part.
type Trace struct {
	TraceID string       `json:"trace_id"`
	Spans   []SpanRecord `json:"spans"`
	// Incomplete lists the peers that took part but could not be asked
	// for their spans (gone, unreachable, or answering with an error).
	Incomplete []string `json:"incomplete,omitempty"`
}

// Sort orders the spans by start time, then by span id.
func (t *Trace) Sort() {
	slices.SortFunc(t.Spans, func(a, b SpanRecord) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return cmp.Compare(a.SpanID, b.SpanID)
	})
}

// Nodes returns the number of distinct nodes with spans in the trace.
func (t *Trace) Nodes() int {
	seen := map[string]bool{}
	for _, s := range t.Spans {
		seen[s.PeerID] = true
	}
	return len(seen)
}

// WriteTimeline prints the trace as a timeline, one span per line with its
// offset from the trace's first span, its node, name and duration:
//
//	trace 4bf9...   total 12.4 ms   nodes 2
//	+0.00 ms  alpha  task.submit            12.40 ms
func (t *Trace) WriteTimeline(w io.Writer) error {
	t.Sort()
	if len(t.Spans) == 0 {
		_, err := fmt.Fprintf(w, "trace %s   no spans\n", t.TraceID)
		return err
	}
	start, end := t.Spans[0].Start, t.Spans[0].End
	names := map[string]string{} // peer ID -> node name, from the spans
	for _, s := range t.Spans {
		if s.Node != "" {
			names[s.PeerID] = s.Node
		}
	}
	nodeW, nameW := 1, 1
	for _, s := range t.Spans {
		end = later(end, s.End)
		nodeW = max(nodeW, len(nodeName(s)))
		nameW = max(nameW, len(label(s, names)))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "trace %s   total %s   nodes %d", t.TraceID, ms(end.Sub(start)), t.Nodes())
	if len(t.Incomplete) > 0 {
		fmt.Fprintf(&b, "   incomplete: no spans from %s", strings.Join(t.Incomplete, ", "))
	}
	b.WriteByte('\n')
	for _, s := range t.Spans {
		fmt.Fprintf(&b, "+%-9s %-*s  %-*s  %9s", ms(s.Start.Sub(start)), nodeW, nodeName(s), nameW, label(s, names), ms(s.Duration()))
		if s.Error != "" {
			fmt.Fprintf(&b, "  error: %s", s.Error)
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func nodeName(s SpanRecord) string {
	if s.Node != "" {
		return s.Node
	}
	if len(s.PeerID) > 12 {
		return s.PeerID[len(s.PeerID)-12:]
	}
	return s.PeerID
}

// label is the span name followed by its most telling attribute: the task
// type, the peer a dispatch went to (by node name when known), the message
// type, the storage backend, the API route.
func label(s SpanRecord, names map[string]string) string {
	for _, k := range []string{"task.type", "peer", "message.type", "storage.backend", "http.route"} {
		if v := s.Attributes[k]; v != "" {
			if n := names[v]; k == "peer" && n != "" {
				v = n
			}
			return s.Name + " " + v
		}
	}
	return s.Name
}

// ms formats d in milliseconds with 2 decimals below 10 ms, 1 above.
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	if f < 10 {
		return fmt.Sprintf("%.2f ms", f)
	}
	return fmt.Sprintf("%.1f ms", f)
}
