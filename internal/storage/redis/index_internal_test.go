package redisstore

import (
	"strings"
	"testing"
)

func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"ab", "ac", true},
		{"a\xff", "b", true},
		{"a\xff\xff", "b", true},
		{"\xff", "", false},
		{"\xff\xff", "", false},
		{"é", "\xc3\xaa", true},     // U+00E9 is C3 A9
		{"日", "\xe6\x97\xa6", true}, // U+65E5 is E6 97 A5
		{"k\x7f", "k\x80", true},
	}
	for _, tc := range tests {
		got, ok := prefixEnd(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("prefixEnd(%q) = %q, %v, want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLexRange(t *testing.T) {
	tests := []struct {
		prefix, after, start, stop string
	}{
		{"", "", "-", "+"},
		{"", "k", "(k", "+"},
		{"a/", "", "[a/", "(a0"},
		{"a/", "a/x", "(a/x", "(a0"},
		{"a/", "0", "[a/", "(a0"}, // after below the prefix: from the prefix
		{"a/", "b", "(b", "(a0"},  // after above the prefix: empty range
		{"\xff", "", "[\xff", "+"},
	}
	for _, tc := range tests {
		start, stop := lexRange(tc.prefix, tc.after)
		if start != tc.start || stop != tc.stop {
			t.Errorf("lexRange(%q, %q) = %q, %q, want %q, %q", tc.prefix, tc.after, start, stop, tc.start, tc.stop)
		}
	}
}

func TestCRC16(t *testing.T) {
	// The check value of CRC16-XMODEM, and slots given by the Redis
	// Cluster specification and CLUSTER KEYSLOT.
	if got := crc16("123456789"); got != 0x31c3 {
		t.Fatalf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	for key, slot := range map[string]uint16{"foo": 12182, "bar": 5061, "hello": 866} {
		if got := crc16(key) % clusterSlots; got != slot {
			t.Errorf("slot(%q) = %d, want %d", key, got, slot)
		}
	}
}

func TestIndexKeys(t *testing.T) {
	if got := indexKeys("p:", false); len(got) != 1 || got[0] != "p:\x00idx" {
		t.Fatalf("standalone index keys = %q", got)
	}
	keys := indexKeys("p:", true)
	if len(keys) != clusterShards {
		t.Fatalf("%d cluster shards, want %d", len(keys), clusterShards)
	}
	for i, k := range keys {
		tag, ok := strings.CutPrefix(k, "p:\x00idx{")
		if !ok || !strings.HasSuffix(tag, "}") {
			t.Fatalf("shard %d key %q", i, k)
		}
		slot := int(crc16(strings.TrimSuffix(tag, "}")) % clusterSlots)
		if slot/(clusterSlots/clusterShards) != i {
			t.Errorf("shard %d (%q) in slot %d, outside its range", i, k, slot)
		}
	}
}
