package node

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrDataDirInUse is matched (errors.Is) when another process, normally
// another node, holds the lock on the data directory.
var ErrDataDirInUse = errors.New("data dir is in use by another node")

// dataDirInUseError names the directory whose lock is taken.
type dataDirInUseError struct{ path string }

func (e dataDirInUseError) Error() string {
	return fmt.Sprintf("data dir %s is in use by another node (lock held on %s)", e.path, e.path)
}

func (e dataDirInUseError) Is(target error) bool { return target == ErrDataDirInUse }

// dataDir is a node's claim on its data directory: an exclusive lock on the
// directory, held from before anything is created in it until the node is
// closed, and the list of paths this start created, so that a start that
// fails removes them again and leaves the directory as it found it.
type dataDir struct {
	path    string
	lock    *os.File // nil where locking is not supported
	created []string // removed in reverse order by a failed start
	log     *slog.Logger
}

// claimDataDir creates path (mode 0700) when it does not exist and locks it.
// The lock is taken on the directory itself, so no lock file is created;
// the kernel drops it when the process exits, however it exits.
func claimDataDir(path string, log *slog.Logger) (d *dataDir, err error) {
	d = &dataDir{path: path, log: log}
	top, err := topMissing(path)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", path, err)
	}
	if top != "" {
		if err := os.MkdirAll(path, 0o700); err != nil {
			// MkdirAll may have made some of the parents before failing.
			_ = os.RemoveAll(top)
			return nil, fmt.Errorf("data dir %s: %w", path, err)
		}
		d.created = append(d.created, top)
		// The umask may have removed bits; the directory holds the private key.
		if err := os.Chmod(path, 0o700); err != nil {
			d.rollback()
			return nil, fmt.Errorf("data dir %s: %w", path, err)
		}
	} else if st, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", path, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("data dir %s is not a directory", path)
	}
	if err := d.lockDir(); err != nil {
		d.rollback()
		return nil, err
	}
	return d, nil
}

// willCreate records that path is about to be created (by a store, say)
// unless it already exists: a failed start removes the topmost directory
// that did not exist before. Only paths inside the data dir are recorded:
// elsewhere the lock does not cover them, and what looked missing may be
// another node's by the time it would be removed.
func (d *dataDir) willCreate(path string) error {
	if !within(d.path, path) {
		return nil
	}
	top, err := topMissing(path)
	if err != nil {
		return err
	}
	if top != "" {
		d.created = append(d.created, top)
	}
	return nil
}

// didCreate records that this start created path.
func (d *dataDir) didCreate(path string) { d.created = append(d.created, path) }

// release removes what this start created when it failed, then unlocks the
// directory. The removal happens under the lock, so another node can never
// see (and adopt) an identity about to disappear.
func (d *dataDir) release(failed bool) error {
	if failed {
		d.rollback()
	}
	d.created = nil
	if d.lock == nil {
		return nil
	}
	err := d.unlockDir()
	d.lock = nil
	return err
}

// rollback removes the recorded paths, newest first. A path that cannot be
// removed is logged: the start has failed already and its cause is what the
// operator must see.
func (d *dataDir) rollback() {
	for _, p := range slices.Backward(d.created) {
		if err := os.RemoveAll(p); err != nil {
			d.log.Warn("could not remove what the failed start created", "path", p, "err", err)
		}
	}
	d.created = nil
}

// topMissing returns the topmost ancestor of path (path included) that does
// not exist, or "" when path exists.
func topMissing(path string) (string, error) {
	path = filepath.Clean(path)
	top := ""
	for p := path; ; p = filepath.Dir(p) {
		_, err := os.Lstat(p)
		if err == nil {
			return top, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		top = p
		if parent := filepath.Dir(p); parent == p {
			return top, nil
		}
	}
}

// within reports whether path is dir or inside it.
func within(dir, path string) bool {
	ad, err1 := filepath.Abs(dir)
	ap, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(ad, ap)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
