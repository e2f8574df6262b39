//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package node

// lockDir does nothing where directories cannot be flocked; the local
// store's own lock file still keeps a second node out of the same store.
func (d *dataDir) lockDir() error { return nil }

func (d *dataDir) unlockDir() error { return nil }
