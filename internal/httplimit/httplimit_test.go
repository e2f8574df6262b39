package httplimit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve runs h on a loopback listener capped at maxConns and returns its
// address and server.
func serve(t *testing.T, h http.Handler, maxConns int) (string, *http.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(LimitListener(ln, maxConns)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), srv
}

// sendHeaders dials addr and sends a PUT announcing a body of n bytes.
func sendHeaders(t *testing.T, addr string, n int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fmt.Fprintf(c, "PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", n)
	return c
}

// trickle writes one byte every interval until the peer closes or stop closes.
func trickle(c net.Conn, interval time.Duration, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(interval):
		}
		if _, err := c.Write([]byte("x")); err != nil {
			return
		}
	}
}

// waitClosed reads from c until EOF or reset, failing after d.
func waitClosed(t *testing.T, c net.Conn, d time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	data, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %s", d)
	}
	return string(data)
}

func TestSlowBodyUnderFloorRateIsCut(t *testing.T) {
	errc := make(chan error, 1)
	h := SlowBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		errc <- err
		if err != nil {
			http.Error(w, "slow", http.StatusRequestTimeout)
		}
	}), BodyLimits{Timeout: 30 * time.Second, MinRate: 4096, Grace: 300 * time.Millisecond})
	addr, _ := serve(t, h, 0)
	c := sendHeaders(t, addr, 1000)
	stop := make(chan struct{})
	defer close(stop)
	start := time.Now()
	go trickle(c, 100*time.Millisecond, stop)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrBodyTooSlow) {
			t.Fatalf("handler error = %v, want ErrBodyTooSlow", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler still reading a trickling body after 5s")
	}
	waitClosed(t, c, 3*time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cut after %s, want about the 300ms grace", d)
	}
}

func TestSlowBodyTotalTimeout(t *testing.T) {
	errc := make(chan error, 1)
	h := SlowBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		errc <- err
	}), BodyLimits{Timeout: 500 * time.Millisecond})
	addr, _ := serve(t, h, 0)
	c := sendHeaders(t, addr, 1<<20)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // fast enough for any floor, but never finishes in time
		buf := make([]byte, 64<<10)
		for i := 0; i < 15; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrBodyTooSlow) {
			t.Fatalf("handler error = %v, want ErrBodyTooSlow", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("body not cut at the total limit")
	}
	waitClosed(t, c, 3*time.Second)
}

func TestFastBodyAndKeepAlivePass(t *testing.T) {
	h := SlowBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d", len(b))
	}), BodyLimits{Timeout: 5 * time.Second, MinRate: 4096, Grace: 200 * time.Millisecond})
	addr, _ := serve(t, h, 0)
	client := &http.Client{}
	for i := 0; i < 2; i++ {
		resp, err := client.Post("http://"+addr+"/x", "text/plain", strings.NewReader(strings.Repeat("a", 100000)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "100000" {
			t.Fatalf("status %d body %q", resp.StatusCode, b)
		}
		// Idle past the grace: the lifted deadline must not break keep-alive.
		time.Sleep(400 * time.Millisecond)
	}
}

func TestLimitListenerClosesExcess(t *testing.T) {
	block := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block })
	addr, _ := serve(t, h, 2)
	var conns []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		conns = append(conns, c)
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	waitClosed(t, third, 3*time.Second)
	close(block)
	// The slots come back once the first connections close.
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBudgetRefusesBeyondLimit(t *testing.T) {
	b := NewBudget(100, 60)
	inside := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	h := b.Limit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(inside) })
		<-release
		_, _ = io.Copy(io.Discard, r.Body)
	}), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	addr, _ := serve(t, h, 0)
	first := sendHeaders(t, addr, 60)
	fmt.Fprint(first, strings.Repeat("a", 60))
	<-inside
	if got := b.InUse(); got != 60 {
		t.Fatalf("in use = %d, want 60", got)
	}
	// 60 + 50 > 100: refused (the body is read and dropped).
	second := sendHeaders(t, addr, 50)
	fmt.Fprint(second, strings.Repeat("b", 50))
	resp, err := http.ReadResponse(bufio.NewReader(second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("status %d retry-after %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// An unknown length reserves the per-request maximum (60): refused too.
	if b.TryAcquire(41) {
		t.Fatal("budget over its limit")
	}
	close(release)
	deadline := time.Now().Add(3 * time.Second)
	for b.InUse() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("in use = %d after the handler returned", b.InUse())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestShutdownClosesTricklingClient(t *testing.T) {
	h := SlowBody(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
	}), BodyLimits{Timeout: time.Minute}) // no floor: only shutdown can end it
	addr, srv := serve(t, h, 0)
	c := sendHeaders(t, addr, 1000)
	stop := make(chan struct{})
	defer close(stop)
	go trickle(c, 100*time.Millisecond, stop)
	time.Sleep(300 * time.Millisecond) // the request is in its handler
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := Shutdown(ctx, srv, 500*time.Millisecond); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown took %s with a trickling client, want about the 500ms grace", d)
	}
	waitClosed(t, c, 2*time.Second)
}

// dialFrom dials addr from the loopback source address src (Linux routes
// all of 127.0.0.0/8 to the loopback interface).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 3 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// getOn sends GET path on c and returns the status code, failing if c is
// closed instead.
func getOn(t *testing.T, c net.Conn, path string) int {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s from %s: %v", path, c.LocalAddr(), err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLimitListenerPerClient: one client (source address) holding its
// share of connections has its next one closed at accept, while other
// clients are still served, up to the total; a client's slots come back as
// its connections close, and its entry goes away with its last one.
func TestLimitListenerPerClient(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			<-block
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	refused := map[string]int{}
	limited := LimitConns(ln, ConnLimits{Max: 5, PerClient: 2, Refused: func(reason string) {
		mu.Lock()
		refused[reason]++
		mu.Unlock()
	}}).(*limitListener)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(limited) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()

	// The attacker, 127.0.0.1, holds two connections idle (kept alive).
	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	for _, c := range []net.Conn{a1, a2} {
		if code := getOn(t, c, "/ok"); code != 200 {
			t.Fatalf("first connections: %d", code)
		}
	}
	// Its third and fourth are closed at accept, without an answer.
	for range 2 {
		if got := waitClosed(t, dialFrom(t, "127.0.0.1", addr), 3*time.Second); got != "" {
			t.Fatalf("connection over the client's share answered %q", got)
		}
	}
	// Another client is served meanwhile, and a third, up to the total of 5.
	b1 := dialFrom(t, "127.0.0.2", addr)
	if code := getOn(t, b1, "/ok"); code != 200 {
		t.Fatalf("other client: %d", code)
	}
	b2, c1 := dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.3", addr)
	for _, c := range []net.Conn{b2, c1} {
		if code := getOn(t, c, "/ok"); code != 200 {
			t.Fatalf("within the total: %d", code)
		}
	}
	// Five open: a fourth client is refused by the total.
	waitClosed(t, dialFrom(t, "127.0.0.4", addr), 3*time.Second)
	mu.Lock()
	if refused[RefusedPerClient] != 2 || refused[RefusedMax] != 1 || len(refused) != 2 {
		t.Errorf("refusals counted %v, want 2 %s and 1 %s", refused, RefusedPerClient, RefusedMax)
	}
	mu.Unlock()

	// The attacker's slots come back once its connections close.
	a1.Close()
	a2.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		limited.mu.Lock()
		_, held := limited.open[netip.MustParsePrefix("127.0.0.1/32")]
		limited.mu.Unlock()
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client's entry outlived its connections")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code := getOn(t, dialFrom(t, "127.0.0.1", addr), "/ok"); code != 200 {
		t.Fatalf("after closing: %d", code)
	}
}

func TestClientOf(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, ""},
	} {
		p, ok := clientOf(c.addr)
		got := ""
		if ok {
			got = p.String()
		}
		if got != c.want {
			t.Errorf("clientOf(%v) = %q, want %q", c.addr, got, c.want)
		}
	}
}
