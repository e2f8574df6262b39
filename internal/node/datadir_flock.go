//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package node

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockDir takes an exclusive, non-blocking flock on the data directory.
// A file system that cannot lock directories (some network file systems)
// is logged and the node runs unlocked, as it did before locking existed.
func (d *dataDir) lockDir() error {
	f, err := os.Open(d.path)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", d.path, err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case err == nil:
		d.lock = f
		return nil
	case errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return dataDirInUseError{d.path}
	default:
		f.Close()
		d.log.Warn("cannot lock the data dir; nothing stops a second node from using it", "path", d.path, "err", err)
		return nil
	}
}

// unlockDir drops the lock (closing the descriptor drops it too).
func (d *dataDir) unlockDir() error {
	err := unix.Flock(int(d.lock.Fd()), unix.LOCK_UN)
	if cerr := d.lock.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("unlocking data dir %s: %w", d.path, err)
	}
	return nil
}
