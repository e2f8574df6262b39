package message

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestUTCTimeCodec checks the fast sent_at codec against time.Time's own
// text methods: the same text for any UTC time, and for a text the fast
// parser accepts, the same value (==, so the same location too).
func TestUTCTimeCodec(t *testing.T) {
	times := []time.Time{
		time.Date(2026, 12, 3, 10, 32, 55, 123456789, time.UTC),
		time.Date(2026, 12, 3, 10, 32, 55, 0, time.UTC),
		time.Date(2026, 12, 3, 10, 32, 55, 100000000, time.UTC),
		time.Date(2024, 2, 29, 23, 59, 59, 1, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Now().UTC(),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		times = append(times, time.Unix(r.Int64N(253402300800)-62167219200, r.Int64N(1e9)).UTC())
	}
	for _, tm := range times {
		got, ok := appendUTC(nil, tm)
		if !ok {
			t.Fatalf("appendUTC refused %v", tm)
		}
		want, _ := tm.AppendText(nil)
		if string(got) != string(want) {
			t.Fatalf("appendUTC(%v) = %s, want %s", tm, got, want)
		}
		back, ok := parseUTC([]byte(`"` + string(got) + `"`))
		if !ok || back != tm {
			t.Fatalf("parseUTC(%s) = %v %v, want %v", got, back, ok, tm)
		}
	}
	for _, y := range []int{-1, 10000} {
		if _, ok := appendUTC(nil, time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)); ok {
			t.Errorf("appendUTC accepted year %d", y)
		}
	}
	for _, q := range []string{
		`"2025-02-29T00:00:00Z"`, `"2024-13-01T00:00:00Z"`, `"2024-00-01T00:00:00Z"`, `"2024-01-00T00:00:00Z"`,
		`"2024-04-31T00:00:00Z"`, `"1900-02-29T00:00:00Z"`, `"2024-01-01T24:00:00Z"`, `"2024-01-01T00:60:00Z"`,
		`"2024-01-01T00:00:60Z"`, `"2024-01-01t00:00:00Z"`, `"2024-01-01T00:00:00z"`, `"2024-01-01T00:00:00.Z"`,
		`"2024-01-01T00:00:00.1234567890Z"`, `"2024-01-01T00:00:00+00:00"`, `"2024-01-01T00:00:00,5Z"`,
		`"2024-01-01T00:00:0aZ"`, `"+024-01-01T00:00:00Z"`, `"2024-01-01T00:00:00Z`, `2024-01-01T00:00:00Z"`,
		`"2024-1-01T00:00:00Z"`, `""`, `"Z"`, `"2024-01-01T00:00:00.-1Z"`,
	} {
		if tm, ok := parseUTC([]byte(q)); ok {
			var ref time.Time
			if err := ref.UnmarshalJSON([]byte(q)); err != nil || ref != tm {
				t.Errorf("parseUTC accepted %s as %v; UnmarshalJSON gives %v, %v", q, tm, ref, err)
			}
		}
	}
	// What the fast parser refuses is still read, by UnmarshalJSON.
	env, err := decodeEnvelope([]byte(`{"v":1,"id":"a","type":"ping","sent_at":"2024-01-01T01:00:00.5+01:00"}`))
	if err != nil || !env.SentAt.Equal(time.Date(2024, 1, 1, 0, 0, 0, 5e8, time.UTC)) {
		t.Fatalf("offset time: %v, %v", env, err)
	}
}

// FuzzParseUTC: whatever the fast parser accepts, UnmarshalJSON accepts
// with the same value.
func FuzzParseUTC(f *testing.F) {
	for _, s := range []string{`"2026-12-03T10:32:55.123456789Z"`, `"2024-02-29T00:00:00Z"`, `"2025-02-29T00:00:00Z"`, `"2024-01-01T00:00:00.5Z"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, q []byte) {
		tm, ok := parseUTC(q)
		if !ok {
			return
		}
		var ref time.Time
		if err := ref.UnmarshalJSON(q); err != nil {
			t.Fatalf("parseUTC accepted %q, UnmarshalJSON refuses: %v", q, err)
		}
		if ref != tm {
			t.Fatalf("parseUTC(%q) = %v, UnmarshalJSON %v", q, tm, ref)
		}
	})
}
