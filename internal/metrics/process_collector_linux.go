package metrics

import (
	"bytes"
	"errors"
	"math"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/procfs"
)

// netstatInterval is how often the process collector re-reads
// /proc/self/net/netstat for process_network_{receive,transmit}_bytes_total.
// Those counters are per network namespace, not per process, and the file
// is the most expensive of the collector's reads; between two reads the
// scrape repeats the last values.
const netstatInterval = 5 * time.Second

// userHZ is USER_HZ, the unit of the times in /proc/<pid>/stat (fixed at
// 100 on every Linux architecture that Go supports, as procfs assumes).
const userHZ = 100

// processCollector exposes the families of client_golang's process
// collector, with the same names, types and help texts, at a fraction of
// its cost: client_golang re-reads all of /proc/stat on every scrape for the
// boot time (to compute the start time, which never changes),
// /proc/self/limits through a regular expression per line and
// /proc/self/net/netstat. Here the start time is computed once, the limits
// come from getrlimit(2), and netstat is read at most every
// netstatInterval. CPU time, memory and open descriptors are read from
// /proc/self at every scrape, as before.
type processCollector struct {
	cpuTotal, openFDs, maxFDs, vsize, maxVsize, rss, start, netIn, netOut *prometheus.Desc

	proc     procfs.Proc
	pageSize float64
	startSec float64 // process start, Unix seconds; NaN when unknown
	now      func() time.Time

	mu        sync.Mutex
	buf       []byte
	netAt     time.Time // last netstat read attempt (zero: never)
	netOK     bool
	netInOct  float64
	netOutOct float64
}

// newProcessCollector returns the Linux process collector, or
// client_golang's where /proc is unusable.
func newProcessCollector() prometheus.Collector {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return fallbackProcessCollector()
	}
	p, err := fs.Self()
	if err != nil {
		return fallbackProcessCollector()
	}
	c := &processCollector{
		cpuTotal: prometheus.NewDesc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", nil, nil),
		openFDs:  prometheus.NewDesc("process_open_fds", "Number of open file descriptors.", nil, nil),
		maxFDs:   prometheus.NewDesc("process_max_fds", "Maximum number of open file descriptors.", nil, nil),
		vsize:    prometheus.NewDesc("process_virtual_memory_bytes", "Virtual memory size in bytes.", nil, nil),
		maxVsize: prometheus.NewDesc("process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes.", nil, nil),
		rss:      prometheus.NewDesc("process_resident_memory_bytes", "Resident memory size in bytes.", nil, nil),
		start:    prometheus.NewDesc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", nil, nil),
		netIn:    prometheus.NewDesc("process_network_receive_bytes_total", "Number of bytes received by the process over the network.", nil, nil),
		netOut:   prometheus.NewDesc("process_network_transmit_bytes_total", "Number of bytes sent by the process over the network.", nil, nil),
		proc:     p,
		pageSize: float64(os.Getpagesize()),
		startSec: math.NaN(),
		now:      time.Now,
		buf:      make([]byte, 0, 1024),
	}
	// The boot time (btime of /proc/stat) and the process's start tick are
	// read once: neither changes while the process runs.
	if st, err := p.Stat(); err == nil {
		if t, err := st.StartTime(); err == nil {
			c.startSec = t
		}
	}
	return c
}

func fallbackProcessCollector() prometheus.Collector {
	return collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
}

// Describe sends the nine process_* descriptors.
func (c *processCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.cpuTotal, c.openFDs, c.maxFDs, c.vsize, c.maxVsize, c.rss, c.start, c.netIn, c.netOut} {
		ch <- d
	}
}

// Collect reads /proc/self/stat, the size of /proc/self/fd and the rlimits
// now, and /proc/self/net/netstat when the last read is netstatInterval old.
// A failed read leaves its families out of this scrape, as client_golang's
// collector does without ReportErrors.
func (c *processCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	st, stErr := c.readStat()
	netOK, in, out := c.netstat()
	c.mu.Unlock()

	if stErr == nil {
		ch <- prometheus.MustNewConstMetric(c.cpuTotal, prometheus.CounterValue, float64(st.utime+st.stime)/userHZ)
		ch <- prometheus.MustNewConstMetric(c.vsize, prometheus.GaugeValue, float64(st.vsize))
		ch <- prometheus.MustNewConstMetric(c.rss, prometheus.GaugeValue, float64(st.rss)*c.pageSize)
		if !math.IsNaN(c.startSec) {
			ch <- prometheus.MustNewConstMetric(c.start, prometheus.GaugeValue, c.startSec)
		}
	}
	if n, err := c.proc.FileDescriptorsLen(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.openFDs, prometheus.GaugeValue, float64(n))
	}
	var nofile, as syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile) == nil && syscall.Getrlimit(syscall.RLIMIT_AS, &as) == nil {
		ch <- prometheus.MustNewConstMetric(c.maxFDs, prometheus.GaugeValue, rlimitValue(nofile.Cur))
		ch <- prometheus.MustNewConstMetric(c.maxVsize, prometheus.GaugeValue, rlimitValue(as.Cur))
	}
	if netOK {
		ch <- prometheus.MustNewConstMetric(c.netIn, prometheus.CounterValue, in)
		ch <- prometheus.MustNewConstMetric(c.netOut, prometheus.CounterValue, out)
	}
}

// rlimitValue is a soft limit as client_golang reports it from
// /proc/self/limits: "unlimited" (RLIM_INFINITY) is 2^64-1, as procfs
// parses it.
func rlimitValue(v uint64) float64 {
	return float64(v)
}

// netstat returns the cached IpExt InOctets/OutOctets, re-read when the
// last read is netstatInterval old. Called with c.mu held.
func (c *processCollector) netstat() (bool, float64, float64) {
	now := c.now()
	if !c.netAt.IsZero() && now.Sub(c.netAt) < netstatInterval && now.Sub(c.netAt) >= 0 {
		return c.netOK, c.netInOct, c.netOutOct
	}
	c.netAt = now
	ns, err := c.proc.Netstat()
	if err != nil {
		c.netOK = false
		return false, 0, 0
	}
	c.netOK, c.netInOct, c.netOutOct = true, 0, 0
	if ns.InOctets != nil {
		c.netInOct = *ns.InOctets
	}
	if ns.OutOctets != nil {
		c.netOutOct = *ns.OutOctets
	}
	return true, c.netInOct, c.netOutOct
}

// selfStat holds the fields of /proc/self/stat the collector uses.
type selfStat struct {
	utime, stime, starttime, vsize, rss uint64
}

// readStat reads /proc/self/stat into c.buf and parses it. Called with
// c.mu held.
func (c *processCollector) readStat() (selfStat, error) {
	f, err := os.Open("/proc/self/stat")
	if err != nil {
		return selfStat{}, err
	}
	defer f.Close()
	b := c.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil || n == 0 {
			break
		}
	}
	c.buf = b[:0]
	return parseSelfStat(b)
}

var errStatFormat = errors.New("unexpected format of /proc/self/stat")

// parseSelfStat parses the fields of a /proc/<pid>/stat line that follow
// the command name (which is in parentheses and may hold anything, so the
// last ')' ends it): state is field 3, utime 14, stime 15, starttime 22,
// vsize 23 and rss (in pages) 24, as in proc(5).
func parseSelfStat(b []byte) (selfStat, error) {
	r := bytes.LastIndexByte(b, ')')
	if r < 0 || r+2 > len(b) {
		return selfStat{}, errStatFormat
	}
	rest := b[r+2:]
	var s selfStat
	for field := 3; field <= 24; field++ {
		rest = bytes.TrimLeft(rest, " ")
		i := bytes.IndexAny(rest, " \n")
		if i < 0 {
			i = len(rest)
		}
		tok := rest[:i]
		rest = rest[i:]
		if len(tok) == 0 {
			return selfStat{}, errStatFormat
		}
		var dst *uint64
		switch field {
		case 14:
			dst = &s.utime
		case 15:
			dst = &s.stime
		case 22:
			dst = &s.starttime
		case 23:
			dst = &s.vsize
		case 24:
			dst = &s.rss
		default:
			continue
		}
		var v uint64
		for _, ch := range tok {
			if ch < '0' || ch > '9' {
				return selfStat{}, errStatFormat
			}
			v = v*10 + uint64(ch-'0')
		}
		*dst = v
	}
	return s, nil
}
