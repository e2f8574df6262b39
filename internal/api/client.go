package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/p2p-ai-agents/p2p-agent/internal/task"
	"github.com/p2p-ai-agents/p2p-agent/internal/tracing"
)

// DefaultAddr is where the CLI looks for a node when --api and P2P_AGENT_API are unset.
const DefaultAddr = "127.0.0.1:7070"

// ErrUnreachable means no node answered at the API address.
var ErrUnreachable = errors.New("node unreachable")

// Error is an error answer of the API: its status code and message.
type Error struct {
	StatusCode int
	Message    string
}

func (e *Error) Error() string { return e.Message }

// Client talks to a node's control API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for addr (host:port or a full http:// URL),
// sending token as a bearer token when it is not empty.
func NewClient(addr, token string) *Client {
	base := strings.TrimRight(addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{base: base, token: token, http: &http.Client{Timeout: 2 * time.Minute}}
}

// do sends one request and decodes a JSON answer into out (when non-nil),
// or returns the raw body when out is nil.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, strings.TrimPrefix(c.base, "http://"), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		if msg == "" {
			msg = resp.Status
		}
		return nil, &Error{StatusCode: resp.StatusCode, Message: msg}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("decoding answer of %s %s: %w", method, path, err)
		}
	}
	return data, nil
}

func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodPost, path, bytes.NewReader(b), "application/json", out)
	return err
}

// Status returns the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	_, err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, "", &st)
	return st, err
}

// Peers lists the node's connected peers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var ps []Peer
	_, err := c.do(ctx, http.MethodGet, "/api/v1/peers", nil, "", &ps)
	return ps, err
}

func kvPath(key, consistency string) string {
	p := "/api/v1/kv/" + url.PathEscape(key)
	if consistency != "" {
		p += "?consistency=" + url.QueryEscape(consistency)
	}
	return p
}

// Get returns the raw value of key.
func (c *Client) Get(ctx context.Context, key, consistency string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, kvPath(key, consistency), nil, "", nil)
}

// Put stores value under key.
func (c *Client) Put(ctx context.Context, key string, value []byte, consistency string) error {
	_, err := c.do(ctx, http.MethodPut, kvPath(key, consistency), bytes.NewReader(value), "application/octet-stream", nil)
	return err
}

// Delete removes key.
func (c *Client) Delete(ctx context.Context, key, consistency string) error {
	_, err := c.do(ctx, http.MethodDelete, kvPath(key, consistency), nil, "", nil)
	return err
}

// ListPage returns one page of the entries whose key starts with prefix and
// sorts after after (limit 0: the server's default page size).
func (c *Client) ListPage(ctx context.Context, prefix, after string, limit int, consistency string) (KVList, error) {
	q := url.Values{}
	q.Set("prefix", prefix)
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if consistency != "" {
		q.Set("consistency", consistency)
	}
	var out KVList
	_, err := c.do(ctx, http.MethodGet, "/api/v1/kv?"+q.Encode(), nil, "", &out)
	return out, err
}

// List follows the pages of prefix and calls fn once per page, in key order,
// so that a caller holds one page at a time.
func (c *Client) List(ctx context.Context, prefix, consistency string, fn func(KVList) error) error {
	after := ""
	for {
		page, err := c.ListPage(ctx, prefix, after, 0, consistency)
		if err != nil {
			return err
		}
		if err := fn(page); err != nil {
			return err
		}
		if page.Next == "" {
			return nil
		}
		after = page.Next
	}
}

// Ping pings peer count times through the node.
func (c *Client) Ping(ctx context.Context, peer string, count int) (PingResult, error) {
	var res PingResult
	err := c.postJSON(ctx, "/api/v1/ping", PingRequest{Peer: peer, Count: count}, &res)
	return res, err
}

// SubmitTask submits a task and returns its queued record.
func (c *Client) SubmitTask(ctx context.Context, req TaskRequest) (task.Record, error) {
	var rec task.Record
	err := c.postJSON(ctx, "/api/v1/tasks", req, &rec)
	return rec, err
}

// Task returns the record of task id.
func (c *Client) Task(ctx context.Context, id string) (task.Record, error) {
	var rec task.Record
	_, err := c.do(ctx, http.MethodGet, "/api/v1/tasks/"+url.PathEscape(id), nil, "", &rec)
	return rec, err
}

// Trace returns trace id assembled across the nodes that took part.
func (c *Client) Trace(ctx context.Context, id string) (tracing.Trace, error) {
	var t tracing.Trace
	_, err := c.do(ctx, http.MethodGet, "/api/v1/traces/"+url.PathEscape(id), nil, "", &t)
	return t, err
}

// Stats returns the node's status and counters now.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	_, err := c.do(ctx, http.MethodGet, "/api/v1/stats", nil, "", &st)
	return st, err
}

// Network returns the mesh as the node sees it.
func (c *Client) Network(ctx context.Context) (NetworkView, error) {
	var v NetworkView
	_, err := c.do(ctx, http.MethodGet, "/api/v1/network", nil, "", &v)
	return v, err
}
