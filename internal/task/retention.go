package task

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2p-ai-agents/p2p-agent/internal/storage"
)

// Retention defaults.
const (
	// DefaultRetention is how long final task records are kept.
	DefaultRetention = 7 * 24 * time.Hour
	// DefaultMaxRecords is how many task records are kept at most.
	DefaultMaxRecords = 100_000
	// DefaultRetentionInterval is the time between two retention passes.
	DefaultRetentionInterval = time.Minute
	// maxRemovalsPerPass bounds the deletes of one retention pass.
	maxRemovalsPerPass = 1000
	// retentionPage is the number of records read at once.
	retentionPage = 1000
)

// pageFunc returns up to limit records under RecordPrefix after key after
// (exclusive, "" from the start), and the key to continue from ("" at the
// end). It stands for storage.Store.ListPage until that exists.
type pageFunc func(ctx context.Context, after string, limit int) ([]storage.KV, string, error)

// listPager pages the task records with ListPage, one bounded page at a time.
func listPager(store storage.Store) pageFunc {
	return func(ctx context.Context, after string, limit int) ([]storage.KV, string, error) {
		return store.ListPage(ctx, RecordPrefix, after, limit, storage.Strong)
	}
}

// retainer removes old task records in the background.
type retainer struct {
	store      storage.Store
	page       pageFunc
	retention  time.Duration
	maxRecords int
	interval   time.Duration
	expired    prometheus.Counter
	overLimit  prometheus.Counter
	now        func() time.Time
}

// run makes one pass every interval until ctx ends.
func (r *retainer) run(ctx context.Context, onErr func(error)) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := r.pass(ctx); err != nil && ctx.Err() == nil {
				onErr(err)
			}
		}
	}
}

// pass removes final records created before now-retention and, when more
// than maxRecords remain, the oldest final ones beyond it; at most
// maxRemovalsPerPass deletes. It returns how many records it removed.
func (r *retainer) pass(ctx context.Context) (int, error) {
	type entry struct {
		key     string
		created time.Time
	}
	cutoff := r.now().Add(-r.retention)
	var (
		keep    []entry // final records within retention
		total   int
		removed int
		after   string
	)
	for {
		kvs, next, err := r.page(ctx, after, retentionPage)
		if err != nil {
			return removed, err
		}
		for _, kv := range kvs {
			var rec struct {
				State     State     `json:"state"`
				CreatedAt time.Time `json:"created_at"`
			}
			total++
			if json.Unmarshal(kv.Value, &rec) != nil || !rec.State.Final() {
				continue
			}
			if rec.CreatedAt.Before(cutoff) && removed < maxRemovalsPerPass {
				if err := r.store.Delete(ctx, kv.Key, storage.Strong); err != nil {
					return removed, err
				}
				removed++
				r.expired.Inc()
				total--
				continue
			}
			keep = append(keep, entry{kv.Key, rec.CreatedAt})
		}
		if next == "" {
			break
		}
		after = next
	}
	if excess := total - r.maxRecords; excess > 0 && removed < maxRemovalsPerPass {
		slices.SortFunc(keep, func(a, b entry) int { return cmp.Or(a.created.Compare(b.created), strings.Compare(a.key, b.key)) })
		for _, e := range keep[:min(excess, len(keep))] {
			if removed >= maxRemovalsPerPass {
				break
			}
			if err := r.store.Delete(ctx, e.key, storage.Strong); err != nil {
				return removed, err
			}
			removed++
			r.overLimit.Inc()
		}
	}
	return removed, nil
}
