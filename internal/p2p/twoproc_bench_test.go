package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/metrics"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/message"
	"github.com/p2p-ai-agents/p2p-agent/internal/p2p/p2ptest"
	"github.com/p2p-ai-agents/p2p-agent/internal/testenv"
)

// This file measures the message service against the floor it is held to:
// raw go-libp2p streams kept open, with the responder in another process,
// so that each side's CPU and allocations are its own. It uses only the
// service's exported API.

const (
	// benchChildEnv makes TestBenchResponderChild act as the responder
	// process of BenchmarkServiceVsRawStream; without it the test returns.
	benchChildEnv = "P2P_BENCH_CHILD"
	// benchChildPrefix starts every line the child writes for the parent.
	benchChildPrefix = "BENCH-CHILD "
	// benchChildProfileEnv, when set to a path, makes the responder write
	// its CPU profile there (the parent's is -test.cpuprofile).
	benchChildProfileEnv = "P2P_BENCH_CHILD_CPUPROFILE"
	// benchChildLife bounds the child's life whatever happens to the parent.
	benchChildLife = 30 * time.Minute
	// benchFrameEchoProtocol and every protocol under it echo
	// length-prefixed frames on a kept stream. Each set of raw streams has a
	// protocol of its own (benchFrameEchoProtocol/c<N>-<set>), since
	// go-libp2p allows 64 inbound streams per protocol and peer by default.
	benchFrameEchoProtocol = protocol.ID("/p2p-ai-agents/bench-frame-echo/1.0.0")
	// benchRoundTrips is about the number of round trips of one variant in
	// one round, split over the goroutines but at least benchMinBatch each
	// (5-25 ms a round on loopback).
	benchRoundTrips = 256
	benchMinBatch   = 8
	// benchRoundTimeout bounds one round of one variant.
	benchRoundTimeout = 30 * time.Second
)

// benchNodeHost starts a host on 127.0.0.1 TCP with the message service
// as the node builds it (one registry for go-libp2p's and the service's
// metrics), and no peer exchange.
func benchNodeHost(ctx context.Context, tb testing.TB) (*Host, *message.Service, func()) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	h, err := NewHost(ctx, p2ptest.NewKey(tb), HostConfig{
		ListenAddrs:         []string{"/ip4/127.0.0.1/tcp/0"},
		Registerer:          reg,
		Logger:              log,
		UserAgent:           "p2p-agent/bench",
		DisablePeerExchange: true,
	})
	if err != nil {
		tb.Fatal(err)
	}
	svc := message.NewService(h.Libp2p(), metrics.NewMessages(reg, message.MetricLabels()), message.ServiceConfig{Logger: log})
	return h, svc, func() {
		_ = svc.Close()
		_ = h.Close()
	}
}

// frameEcho answers each length-prefixed frame on s with the same frame,
// until the stream ends: the raw floor of a kept request/response stream.
func frameEcho(s network.Stream) {
	defer func() { _ = s.Reset() }()
	_ = s.SetDeadline(time.Now().Add(benchChildLife))
	br := bufio.NewReader(s)
	buf := make([]byte, 0, 1024)
	for {
		n, err := binary.ReadUvarint(br)
		if err != nil || n > 1<<20 {
			return
		}
		buf = binary.AppendUvarint(buf[:0], n)
		hdr := len(buf)
		buf = slices.Grow(buf, int(n))[:hdr+int(n)]
		if _, err := io.ReadFull(br, buf[hdr:]); err != nil {
			return
		}
		if _, err := s.Write(buf); err != nil {
			return
		}
	}
}

// TestBenchResponderChild is the responder process of
// BenchmarkServiceVsRawStream, run only when benchChildEnv is set. It
// prints its address, answers "mem" on stdin with its malloc count and
// CPU time, and exits when stdin closes.
func TestBenchResponderChild(t *testing.T) {
	if os.Getenv(benchChildEnv) != "1" {
		return
	}
	watchdog := time.AfterFunc(benchChildLife, func() { os.Exit(3) })
	defer watchdog.Stop()
	if path := os.Getenv(benchChildProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	h, _, stop := benchNodeHost(context.Background(), t)
	defer stop()
	h.Libp2p().SetStreamHandlerMatch(benchFrameEchoProtocol, func(id protocol.ID) bool {
		return strings.HasPrefix(string(id), string(benchFrameEchoProtocol)+"/")
	}, frameEcho)
	fmt.Printf("%saddr %s\n", benchChildPrefix, h.Addrs()[0])
	sc := bufio.NewScanner(os.Stdin)
	var ms runtime.MemStats
	for sc.Scan() {
		if sc.Text() == "mem" {
			runtime.ReadMemStats(&ms)
			fmt.Printf("%smem %d %d %d\n", benchChildPrefix, ms.Mallocs, ms.TotalAlloc, cpuTime())
		}
	}
}

// benchChild is the responder process.
type benchChild struct {
	stdin io.WriteCloser
	lines chan string // its benchChildPrefix lines, prefix removed
	exit  chan struct{}
}

// startBenchChild re-executes the test binary as the responder and returns
// it with its address; it is stopped (stdin closed, then killed) at cleanup.
func startBenchChild(b *testing.B) (*benchChild, peer.AddrInfo) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchResponderChild$", "-test.count=1", "-test.timeout="+(benchChildLife+time.Minute).String())
	cmd.Env = append(os.Environ(), benchChildEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &benchChild{stdin: stdin, lines: make(chan string, 16), exit: make(chan struct{})}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), benchChildPrefix); ok {
				c.lines <- line
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		<-read // Wait closes stdout: read it all first
		_ = cmd.Wait()
		close(c.exit)
	}()
	b.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-c.exit:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-c.exit
		}
	})
	line := c.line(b, 60*time.Second)
	addr, ok := strings.CutPrefix(line, "addr ")
	if !ok {
		b.Fatalf("bench child: unexpected line %q", line)
	}
	ai, err := ParsePeer(addr)
	if err != nil {
		b.Fatal(err)
	}
	return c, ai
}

func (c *benchChild) line(b *testing.B, d time.Duration) string {
	b.Helper()
	select {
	case l := <-c.lines:
		return l
	case <-c.exit:
		b.Fatal("bench child exited")
	case <-time.After(d):
		b.Fatalf("bench child: no answer within %s", d)
	}
	return ""
}

// usage returns the child's cumulative malloc count and CPU time.
func (c *benchChild) usage(b *testing.B) (mallocs uint64, cpu time.Duration) {
	b.Helper()
	if _, err := io.WriteString(c.stdin, "mem\n"); err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(c.line(b, 10*time.Second))
	if len(f) != 4 || f[0] != "mem" {
		b.Fatalf("bench child: unexpected answer %q", f)
	}
	n, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	ns, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return n, time.Duration(ns)
}

// cpuTime returns the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// workerPool runs a batch of op on each of its goroutines per round; the
// goroutines are kept between rounds so that a round allocates nothing of
// its own.
type workerPool struct {
	start []chan int
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error
}

func newWorkerPool(b *testing.B, workers int, op func(w int) error) *workerPool {
	p := &workerPool{start: make([]chan int, workers)}
	for w := range p.start {
		ch := make(chan int)
		p.start[w] = ch
		go func() {
			for n := range ch {
				for range n {
					if err := op(w); err != nil {
						p.mu.Lock()
						if p.err == nil {
							p.err = err
						}
						p.mu.Unlock()
						break
					}
				}
				p.wg.Done()
			}
		}()
	}
	b.Cleanup(func() {
		for _, ch := range p.start {
			close(ch)
		}
	})
	return p
}

// round runs batch round trips on every worker and returns the time taken.
func (p *workerPool) round(b *testing.B, batch int) time.Duration {
	p.wg.Add(len(p.start))
	start := time.Now()
	for _, ch := range p.start {
		ch <- batch
	}
	p.wg.Wait()
	d := time.Since(start)
	if p.err != nil {
		b.Fatal(p.err)
	}
	return d
}

// rawStreams opens n kept frame-echo streams of protocol id to target.
func rawStreams(b *testing.B, h *Host, target peer.ID, id protocol.ID, n int) ([]network.Stream, []*bufio.Reader) {
	b.Helper()
	ss := make([]network.Stream, n)
	rs := make([]*bufio.Reader, n)
	for i := range ss {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := h.Libp2p().NewStream(ctx, target, id)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Reset() })
		ss[i], rs[i] = s, bufio.NewReader(s)
	}
	return ss, rs
}

// rawRoundTrip writes frame on s and reads the echoed frame into buf.
func rawRoundTrip(s network.Stream, r *bufio.Reader, frame, buf []byte) error {
	if _, err := s.Write(frame); err != nil {
		return err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	if n > uint64(len(buf)) {
		return fmt.Errorf("echo frame of %d bytes, sent %d", n, len(buf))
	}
	_, err = io.ReadFull(r, buf[:n])
	return err
}

// BenchmarkServiceVsRawStream compares Service.Ping with a raw echo of the
// same frame on kept go-libp2p streams, the responder being another
// process (this test binary re-executed as TestBenchResponderChild) on
// 127.0.0.1 TCP. For each concurrency c (sub-benchmark c=N), three
// variants stay alive for the whole run:
//
//	raw A    c goroutines, each with its own kept frame-echo stream
//	service  c goroutines calling Ping over the service's one kept stream
//	raw B    a second set of c raw streams: the A/A control
//
// b.N is a number of rounds; each round runs a batch of 256 round trips
// (at least 8 per goroutine) of every variant in a rotating order.
// Reported, as medians over the rounds: service/raw (service throughput
// over the mean of raw A and B; above 1 the service is faster), control
// (raw B throughput over raw A: a control away from 1 by d means a
// difference smaller than about d is not resolved), rt/s and raw-rt/s,
// ns/op (service time per round trip); and as totals over the rounds,
// allocations per round trip in this process (service-allocs/rt,
// raw-allocs/rt; with -benchmem, allocs/op and B/op are the service's per
// round trip) and in the responder (child-service-allocs/rt,
// child-raw-allocs/rt). Background work of either process (go-libp2p's
// own) is included in the counts.
func BenchmarkServiceVsRawStream(b *testing.B) {
	child, ai := startBenchChild(b)
	ctx := context.Background()
	h, svc, stop := benchNodeHost(ctx, b)
	b.Cleanup(stop)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := svc.Connect(cctx, ai)
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	target := ai.ID
	if _, err := svc.Ping(ctx, target); err != nil { // opens the kept stream
		b.Fatal(err)
	}
	env, err := message.NewEnvelope(message.TypePing, nil)
	if err != nil {
		b.Fatal(err)
	}
	env.ID = "0123abcd-1a2b"
	frame, err := message.AppendFrame(nil, env, 0)
	if err != nil {
		b.Fatal(err)
	}

	for _, c := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			batch := max(benchMinBatch, benchRoundTrips/c)
			rts := batch * c
			var sets [2][]network.Stream
			var pools [3]*workerPool
			for i, k := range []int{0, 2} {
				id := protocol.ID(fmt.Sprintf("%s/c%d-%c", benchFrameEchoProtocol, c, 'a'+i))
				ss, rs := rawStreams(b, h, target, id, c)
				bufs := make([][]byte, c)
				for w := range bufs {
					bufs[w] = make([]byte, len(frame))
				}
				sets[i] = ss
				pools[k] = newWorkerPool(b, c, func(w int) error {
					return rawRoundTrip(ss[w], rs[w], frame, bufs[w])
				})
			}
			pools[1] = newWorkerPool(b, c, func(int) error {
				_, err := svc.Ping(ctx, target)
				return err
			})
			run := func(k int) time.Duration {
				if k != 1 {
					dl := time.Now().Add(benchRoundTimeout)
					for _, s := range sets[k/2] {
						_ = s.SetDeadline(dl)
					}
				}
				return pools[k].round(b, batch)
			}
			for k := range pools { // warm every variant
				run(k)
			}

			var ratio, control, svcRate, rawRate []float64
			var mallocs, bytes, childMallocs [3]uint64
			var ms runtime.MemStats
			var t, cpu, childCPU [3]time.Duration
			b.ResetTimer()
			for r := range b.N {
				for _, k := range testenv.PairedOrders[r%len(testenv.PairedOrders)] {
					c0, cc0 := child.usage(b)
					runtime.ReadMemStats(&ms)
					m0, b0 := ms.Mallocs, ms.TotalAlloc
					p0 := cpuTime()
					t[k] = run(k)
					cpu[k] += cpuTime() - p0
					runtime.ReadMemStats(&ms)
					mallocs[k] += ms.Mallocs - m0
					bytes[k] += ms.TotalAlloc - b0
					c1, cc1 := child.usage(b)
					childMallocs[k] += c1 - c0
					childCPU[k] += cc1 - cc0
				}
				raw := (t[0] + t[2]).Seconds() / 2
				ratio = append(ratio, raw/t[1].Seconds())
				control = append(control, t[0].Seconds()/t[2].Seconds())
				svcRate = append(svcRate, float64(rts)/t[1].Seconds())
				rawRate = append(rawRate, float64(rts)/raw)
			}
			b.StopTimer()
			total := float64(rts * b.N)
			b.ReportMetric(1e9/testenv.Median(svcRate), "ns/op")
			b.ReportMetric(testenv.Median(ratio), "service/raw")
			b.ReportMetric(testenv.Median(control), "control")
			b.ReportMetric(testenv.Median(svcRate), "rt/s")
			b.ReportMetric(testenv.Median(rawRate), "raw-rt/s")
			b.ReportMetric(float64(mallocs[1])/total, "allocs/op")
			b.ReportMetric(float64(bytes[1])/total, "B/op")
			b.ReportMetric(float64(mallocs[1])/total, "service-allocs/rt")
			b.ReportMetric(float64(mallocs[0]+mallocs[2])/2/total, "raw-allocs/rt")
			b.ReportMetric(float64(childMallocs[1])/total, "child-service-allocs/rt")
			b.ReportMetric(float64(childMallocs[0]+childMallocs[2])/2/total, "child-raw-allocs/rt")
			us := func(d time.Duration) float64 { return float64(d.Microseconds()) / total }
			b.ReportMetric(us(cpu[1]), "service-cpu-us/rt")
			b.ReportMetric(us(cpu[0]+cpu[2])/2, "raw-cpu-us/rt")
			b.ReportMetric(us(childCPU[1]), "child-service-cpu-us/rt")
			b.ReportMetric(us(childCPU[0]+childCPU[2])/2, "child-raw-cpu-us/rt")
		})
	}
}
