// Package testenv starts the real services tests run against (redis-server,
// a Redis Cluster, ...) on free loopback ports and stops them when the test
// ends.
package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RedisStartTimeout bounds how long a redis-server may take to answer PING
// after it was started, and a Redis Cluster to reach cluster_state:ok.
const RedisStartTimeout = 20 * time.Second

// Redis is a redis-server process started for one test on a loopback port.
// It keeps no data on disk (no RDB, no AOF): a Restart starts empty.
type Redis struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	cluster bool
	busPort int

	mu   sync.Mutex
	proc *redisProc // nil while stopped
}

type redisProc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been reaped
}

// StartRedis starts a redis-server on a free loopback port, waits until it
// answers PING and stops it when the test ends. It never touches a Redis the
// machine already runs (for example on 6379).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{t: t, bin: ToolPath(t, "redis-server"), dir: t.TempDir()}
	r.startFresh()
	return r
}

// RedisAddrOrStart returns host:port of the Redis named by env REDIS_URL when
// it is set, else of a redis-server started for this test. Tests that use it
// must isolate their keys (a unique key prefix), because a Redis from
// REDIS_URL may be shared; tests that stop or restart Redis must use
// StartRedis instead.
func RedisAddrOrStart(t testing.TB) string {
	t.Helper()
	if raw := os.Getenv("REDIS_URL"); raw != "" {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			t.Fatalf("REDIS_URL=%q is not a redis://host:port URL: %v", raw, err)
		}
		return u.Host
	}
	return StartRedis(t).Addr()
}

// startFresh picks free ports and starts the server, retrying with other
// ports when one was taken between probing and binding.
func (r *Redis) startFresh() {
	r.t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		r.port = redisFreePort(r.t)
		if r.cluster {
			r.busPort = redisFreePort(r.t)
			for r.busPort == r.port {
				r.busPort = redisFreePort(r.t)
			}
		}
		if lastErr = r.start(); lastErr == nil {
			r.t.Cleanup(r.cleanup)
			return
		}
	}
	r.t.Fatalf("start redis-server: %v", lastErr)
}

// cleanup stops the server at the end of the test and, when the test failed,
// shows the end of the server's log.
func (r *Redis) cleanup() {
	r.Stop()
	if r.t.Failed() {
		if log, err := os.ReadFile(r.logPath()); err == nil {
			lines := strings.Split(strings.TrimSpace(string(log)), "\n")
			if len(lines) > 20 {
				lines = lines[len(lines)-20:]
			}
			r.t.Logf("redis-server %s log (last lines):\n%s", r.Addr(), strings.Join(lines, "\n"))
		}
	}
}

func (r *Redis) logPath() string { return filepath.Join(r.dir, "redis.log") }

// start launches the process on r.port and waits for PING.
func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		return errors.New("already running")
	}
	args := []string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--logfile", r.logPath(),
		"--daemonize", "no",
	}
	if r.cluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(r.dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(r.busPort),
			"--cluster-node-timeout", "1000",
		)
	}
	cmd := exec.Command(r.bin, args...)
	cmd.Dir = r.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	setParentDeathSignal(cmd.SysProcAttr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &redisProc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	deadline := time.Now().Add(RedisStartTimeout)
	for {
		reply, err := RedisCommand(r.Addr(), time.Second, "PING")
		if err == nil && reply == "PONG" {
			r.proc = p
			return nil
		}
		select {
		case <-p.exited:
			log, _ := os.ReadFile(r.logPath())
			return fmt.Errorf("redis-server on port %d exited early: %s %s", r.port, out.String(), lastLines(log, 5))
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %v", r.port, RedisStartTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Addr returns the server's address as host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL returns the server's address as a redis:// URL.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Port returns the server's TCP port.
func (r *Redis) Port() int { return r.port }

// Running reports whether the server process is up.
func (r *Redis) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.proc != nil
}

// Stop terminates the server (SIGTERM, then SIGKILL after 5 s) and waits
// until the process is gone, so its port refuses connections when Stop
// returns. Stopping a stopped server does nothing.
func (r *Redis) Stop() {
	p := r.detach()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// detach takes the running process, if any, from r for Stop or Kill to
// end: r counts as stopped from then on.
func (r *Redis) detach() *redisProc {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.proc
	r.proc = nil
	return p
}

// Kill ends the server with SIGKILL, like a crash: clients see their
// connections reset rather than closed.
func (r *Redis) Kill() {
	p := r.detach()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Restart starts the server again on the same port (stopping it first if it
// is running). The new server is empty. It retries for a while if the port
// is briefly unavailable, then fails the test.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Stop()
	deadline := time.Now().Add(RedisStartTimeout)
	for {
		err := r.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("restart redis-server on %s: %v", r.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// redisFreePort returns a loopback TCP port that was free a moment ago.
func redisFreePort(t testing.TB) int {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			continue
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		// Ports above 55535 would put a default cluster bus port out of
		// range; 6379 is the machine's own Redis.
		if port != 6379 && port <= 55535 {
			return port
		}
	}
	t.Fatal("no free loopback port")
	return 0
}

// RedisCommand sends one command to the Redis at addr on a new connection
// and returns its reply as text: simple strings, integers and bulk strings
// as they are; an error reply as an error. It needs no client library, so
// the harness does not depend on the code under test.
func RedisCommand(addr string, timeout time.Duration, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(req.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

// readReply reads one RESP2 reply. Arrays come back as their elements'
// text, one per line (nested arrays flattened), which is enough for tests
// that count or search the entries.
func readReply(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n > 1<<20 {
			return "", fmt.Errorf("bad array length %q", line)
		}
		elems := make([]string, 0, max(n, 0))
		for i := 0; i < n; i++ {
			e, err := readReply(rd)
			if err != nil {
				return "", err
			}
			elems = append(elems, e)
		}
		return strings.Join(elems, "\n"), nil
	default:
		return "", fmt.Errorf("unsupported reply %q", line)
	}
}

// setParentDeathSignal asks the kernel to SIGKILL the child when the test
// process dies (a timeout panic skips t.Cleanup), so no redis-server
// outlives its test. Only Linux has the field; elsewhere this does nothing.
func setParentDeathSignal(attr *syscall.SysProcAttr) {
	f := reflect.ValueOf(attr).Elem().FieldByName("Pdeathsig")
	if f.IsValid() && f.CanSet() && f.Kind() == reflect.Int {
		f.SetInt(int64(syscall.SIGKILL))
	}
}

// ReplicaOf makes r a replica of primary and waits (up to 15 s) until its
// link to the primary is up.
func (r *Redis) ReplicaOf(tb testing.TB, primary *Redis) {
	tb.Helper()
	if _, err := RedisCommand(r.Addr(), time.Second, "REPLICAOF", "127.0.0.1", strconv.Itoa(primary.port)); err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := RedisCommand(r.Addr(), time.Second, "INFO", "replication")
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("replica did not sync: %v %s", err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
