// Package identity keeps the node's long-term libp2p identity: an Ed25519 private key
// in a file (normally <data_dir>/identity.key), from which the peer ID is derived.
//
// The file holds the key as produced by crypto.MarshalPrivateKey. It is created once,
// atomically, with mode 0600 in a directory created with mode 0700, and is never
// rewritten afterwards: a damaged key file is reported (ErrCorruptKey) and left as it
// is, because replacing it would silently give the node a new peer ID.
//
// A key file readable or writable by group or others is refused (ErrInsecureKey), as
// ssh does for its keys: the key is the node's identity on the network, and a warning
// in a log is easy to miss. Windows does not have Unix permission bits, so the check is
// skipped there.
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrCorruptKey is wrapped when the key file exists but does not hold a valid Ed25519
// private key: garbage, truncated, empty, or a key of another type.
var ErrCorruptKey = errors.New("corrupt identity key")

// ErrInsecureKey is wrapped when the key file's permissions let group or others read
// or write it (anything looser than 0600).
var ErrInsecureKey = errors.New("identity key file permissions are too open")

// maxKeyFileSize bounds what is read: a marshalled Ed25519 key is 68 bytes (100 in the
// legacy form), so anything much larger is not a key file.
const maxKeyFileSize = 4096

// Load reads the identity at path without creating anything. A missing file is an
// error wrapping fs.ErrNotExist.
func Load(path string) (crypto.PrivKey, peer.ID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("identity: %w", err)
	}
	defer f.Close()

	st, err := f.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("identity: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, "", fmt.Errorf("identity: %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, "", fmt.Errorf("%w: %s is %s (mode %#o); refusing to use it, fix with: chmod 600 %s",
			ErrInsecureKey, path, exposure(perm), perm, path)
	}
	if st.Size() > maxKeyFileSize {
		return nil, "", fmt.Errorf("%w: %s is %d bytes, too large for a key file", ErrCorruptKey, path, st.Size())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("identity: reading %s: %w", path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, "", fmt.Errorf("%w: %s is too large for a key file", ErrCorruptKey, path)
	}

	key, err := decode(data)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s: %w (the file is left as it is; move it away to create a new identity, which changes the peer ID)",
			ErrCorruptKey, path, err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s: deriving peer ID: %w", ErrCorruptKey, path, err)
	}
	return key, id, nil
}

// exposure says who besides the owner can do what with a file of mode perm,
// e.g. "readable by group and others".
func exposure(perm fs.FileMode) string {
	var can, by []string
	if perm&0o044 != 0 {
		can = append(can, "readable")
	}
	if perm&0o022 != 0 {
		can = append(can, "writable")
	}
	if len(can) == 0 {
		can = append(can, "executable")
	}
	if perm&0o070 != 0 {
		by = append(by, "group")
	}
	if perm&0o007 != 0 {
		by = append(by, "others")
	}
	return strings.Join(can, " and ") + " by " + strings.Join(by, " and ")
}

// decode unmarshals a key file and checks it is a self-consistent Ed25519 key.
func decode(data []byte) (crypto.PrivKey, error) {
	if len(data) == 0 {
		return nil, errors.New("file is empty")
	}
	key, err := crypto.UnmarshalPrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("not a libp2p private key: %w", err)
	}
	if t := key.Type(); t != pb.KeyType_Ed25519 {
		return nil, fmt.Errorf("key type is %s, want Ed25519", t)
	}
	raw, err := key.Raw()
	if err != nil {
		return nil, err
	}
	// libp2p does not check that the public half stored after the seed belongs to it;
	// a flipped bit there would give a peer ID that signatures do not match.
	if len(raw) != ed25519.PrivateKeySize ||
		!bytes.Equal(ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize]), raw) {
		return nil, errors.New("public half does not match the private seed")
	}
	return key, nil
}

// LoadOrCreate loads the identity at path, or, when the file does not exist, generates
// a new Ed25519 key and stores it there (created reports this). An existing file is
// never overwritten, whatever its state.
func LoadOrCreate(path string) (key crypto.PrivKey, id peer.ID, created bool, err error) {
	key, id, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, id, false, err
	}

	key, _, err = crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, "", false, fmt.Errorf("identity: generating key: %w", err)
	}
	data, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, "", false, fmt.Errorf("identity: marshalling key: %w", err)
	}
	won, err := writeNew(path, data)
	if err != nil {
		return nil, "", false, err
	}
	if !won {
		// Another process created the file between our Load and our write: use its key,
		// so both agree on the node's identity.
		key, id, err = Load(path)
		return key, id, false, err
	}
	id, err = peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, "", false, fmt.Errorf("identity: deriving peer ID: %w", err)
	}
	return key, id, true, nil
}

// writeNew stores data at path atomically and durably: a temporary file in the same
// directory (mode 0600) is written and synced, then linked into place, then the
// directory is synced. Linking fails if path already exists, so a concurrent creator
// is never overwritten; it reports false in that case. Where hard links are not
// supported it falls back to rename.
func writeNew(path string, data []byte) (created bool, err error) {
	dir := filepath.Dir(path)
	if err := ensureDir(dir); err != nil {
		return false, err
	}

	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("identity: creating %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		// The temporary name never outlives this call, whatever happened.
		if rmErr := os.Remove(tmpName); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("identity: removing temporary file: %w", rmErr)
		}
	}()
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		tmp.Close()
		return false, fmt.Errorf("identity: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, fmt.Errorf("identity: writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("identity: syncing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("identity: closing %s: %w", path, err)
	}

	switch err := os.Link(tmpName, path); {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return false, nil
	default:
		// No hard links on this file system: rename, which is atomic but would replace
		// a file created concurrently, so check just before.
		if _, statErr := os.Lstat(path); statErr == nil {
			return false, nil
		}
		if err := os.Rename(tmpName, path); err != nil {
			return false, fmt.Errorf("identity: installing %s: %w", path, err)
		}
	}
	if err := syncDir(dir); err != nil {
		return false, err
	}
	return true, nil
}

// ensureDir creates dir with mode 0700 if it does not exist. The mode is set again
// after creation because the umask may have removed bits from it; an existing
// directory is left as it is.
func ensureDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("identity: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity: creating directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	return nil
}

// syncDir makes a new directory entry durable. Windows cannot sync directories.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("identity: syncing directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("identity: syncing directory: %w", err)
	}
	return nil
}
