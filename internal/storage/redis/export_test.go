package redisstore

// IndexKeys returns the index sorted sets of s, for tests.
func IndexKeys(s *Store) []string { return s.index }

// IndexKeyOf returns the index sorted set that holds key's entry.
func IndexKeyOf(s *Store, key string) string { return s.indexKey(key) }

// MarkerKey returns the key whose presence says the backfill is done.
func MarkerKey(s *Store) string { return s.marker }
