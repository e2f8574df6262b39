package metrics

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/procfs"
)

func describe(c prometheus.Collector) []string {
	ch := make(chan *prometheus.Desc, 32)
	c.Describe(ch)
	close(ch)
	var out []string
	for d := range ch {
		out = append(out, d.String())
	}
	slices.Sort(out)
	return out
}

func gatherOne(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func value(f *dto.MetricFamily) float64 {
	m := f.GetMetric()[0]
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestProcessCollectorMatchesClientGolang pins the process_* families to
// client_golang's process collector: the same descriptors (names, help,
// labels), the same families with the same types, and the same values up
// to what moves between the two reads.
func TestProcessCollectorMatchesClientGolang(t *testing.T) {
	ours := newProcessCollector()
	if _, ok := ours.(*processCollector); !ok {
		t.Fatalf("newProcessCollector on Linux returned %T", ours)
	}
	ref := collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
	if got, want := describe(ours), describe(ref); !slices.Equal(got, want) {
		t.Fatalf("descriptors differ:\n ours %q\n  ref %q", got, want)
	}
	got, want := gatherOne(t, ours), gatherOne(t, ref)
	if len(got) != 9 || len(got) != len(want) {
		t.Fatalf("%d families, client_golang %d", len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if g.GetType() != w.GetType() || g.GetHelp() != w.GetHelp() || len(g.GetMetric()) != 1 || len(g.GetMetric()[0].GetLabel()) != 0 {
			t.Errorf("%s: %v %q %d series, client_golang %v %q", name, g.GetType(), g.GetHelp(), len(g.GetMetric()), w.GetType(), w.GetHelp())
			continue
		}
		gv, wv := value(g), value(w)
		tol := 0.0
		switch name {
		case "process_cpu_seconds_total":
			tol = 0.5
		case "process_resident_memory_bytes", "process_virtual_memory_bytes":
			tol = 64 << 20
		case "process_open_fds":
			tol = 4
		case "process_network_receive_bytes_total", "process_network_transmit_bytes_total":
			tol = math.Max(wv*0.01, 1<<20) // the namespace's other traffic
		case "process_start_time_seconds":
			tol = 0.01
		}
		if math.Abs(gv-wv) > tol {
			t.Errorf("%s = %v, client_golang %v", name, gv, wv)
		}
	}
}

func TestParseSelfStat(t *testing.T) {
	// comm holds spaces and a ')': the last ')' ends it.
	line := "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 5000 1234567890 4321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	s, err := parseSelfStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := selfStat{utime: 250, stime: 75, starttime: 5000, vsize: 1234567890, rss: 4321}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	for _, bad := range []string{"", "1234 (x", "1234 (x) S 1 2", "1234 (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 2x0 75"} {
		if _, err := parseSelfStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseSelfStat(raw); err != nil {
		t.Fatalf("/proc/self/stat: %v", err)
	}
}

// TestProcessCollectornetstatInterval checks that the network counters are
// read at most once every netstatInterval and repeated in between.
func TestProcessCollectornetstatInterval(t *testing.T) {
	dir := t.TempDir()
	const pid = 42
	write := func(in, out int) {
		t.Helper()
		body := "IpExt: InNoRoutes InOctets OutOctets\nIpExt: 0 " + strconv.Itoa(in) + " " + strconv.Itoa(out) + "\n"
		if err := os.WriteFile(filepath.Join(dir, "42", "net", "netstat"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "42", "net"), 0o700); err != nil {
		t.Fatal(err)
	}
	write(100, 200)
	fs, err := procfs.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := fs.Proc(pid)
	if err != nil {
		t.Fatal(err)
	}
	c := newProcessCollector().(*processCollector)
	c.proc = p
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }

	check := func(in, out float64) {
		t.Helper()
		f := gatherOne(t, c)
		gi, go_ := f["process_network_receive_bytes_total"], f["process_network_transmit_bytes_total"]
		if gi == nil || go_ == nil || value(gi) != in || value(go_) != out {
			t.Fatalf("at %v: network %v %v, want %v %v", now, gi, go_, in, out)
		}
	}
	check(100, 200)
	write(300, 400)
	now = now.Add(netstatInterval - time.Millisecond)
	check(100, 200) // cached
	now = now.Add(time.Millisecond)
	check(300, 400) // re-read
	// A failed read drops the two families until the next successful read.
	if err := os.Remove(filepath.Join(dir, "42", "net", "netstat")); err != nil {
		t.Fatal(err)
	}
	now = now.Add(netstatInterval)
	if f := gatherOne(t, c); f["process_network_receive_bytes_total"] != nil {
		t.Fatal("network family kept after a failed read")
	}
	write(500, 600)
	now = now.Add(netstatInterval)
	check(500, 600)
}

// BenchmarkProcessCollector is one Collect of the process families, this
// package's collector against client_golang's.
func BenchmarkProcessCollector(b *testing.B) {
	for _, bc := range []struct {
		name string
		c    prometheus.Collector
	}{
		{"ours", newProcessCollector()},
		{"client_golang", collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ch := make(chan prometheus.Metric, 16)
			b.ReportAllocs()
			for b.Loop() {
				bc.c.Collect(ch)
				for len(ch) > 0 {
					<-ch
				}
			}
		})
	}
}
