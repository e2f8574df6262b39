package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

// dirNames lists the entries of dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func TestLoadOrCreateCreatesThenIsStable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "node")
	path := filepath.Join(dir, "identity.key")

	key, id, created, err := LoadOrCreate(path)
	if err != nil {
		t.Fatalf("first LoadOrCreate: %v", err)
	}
	if !created {
		t.Fatal("first call: created = false, want true")
	}
	if key.Type() != pb.KeyType_Ed25519 {
		t.Fatalf("key type %s, want Ed25519", key.Type())
	}
	if want, _ := peer.IDFromPrivateKey(key); id != want {
		t.Fatalf("peer ID %s does not belong to the key (%s)", id, want)
	}
	if runtime.GOOS != "windows" {
		if m := mode(t, path); m != 0o600 {
			t.Errorf("key file mode %#o, want 0600", m)
		}
		if m := mode(t, dir); m != 0o700 {
			t.Errorf("created directory mode %#o, want 0700", m)
		}
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"identity.key"}) {
		t.Errorf("directory holds %v, want only identity.key (no temporary files)", names)
	}
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := crypto.MarshalPrivateKey(key); !bytes.Equal(onDisk, want) {
		t.Errorf("file is not crypto.MarshalPrivateKey of the key")
	}

	key2, id2, created2, err := LoadOrCreate(path)
	if err != nil {
		t.Fatalf("second LoadOrCreate: %v", err)
	}
	if created2 {
		t.Error("second call: created = true, want false")
	}
	if id2 != id || !key2.Equals(key) {
		t.Fatalf("second call gave peer %s, first %s", id2, id)
	}
	key3, id3, err := Load(path)
	if err != nil || id3 != id || !key3.Equals(key) {
		t.Fatalf("Load = %s, %v; want %s", id3, err, id)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, onDisk) {
		t.Fatal("loading rewrote the key file")
	}
}

func TestExistingDirectoryModeKept(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := LoadOrCreate(filepath.Join(dir, "identity.key")); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, dir); m != 0o755 {
		t.Fatalf("existing directory mode changed to %#o", m)
	}
}

func TestLoadMissing(t *testing.T) {
	dir := t.TempDir()
	_, _, err := Load(filepath.Join(dir, "identity.key"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Fatalf("Load created %v", names)
	}
}

func TestConcurrentCreateAgrees(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d", "identity.key")
	const n = 8
	ids := make([]peer.ID, n)
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ids[i], created[i], errs[i] = LoadOrCreate(path)
		}()
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("callers disagree on the peer ID: %s vs %s", ids[i], ids[0])
		}
		if created[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Fatalf("%d callers report creating the key, want exactly 1", creators)
	}
	if names := dirNames(t, filepath.Dir(path)); !slices.Equal(names, []string{"identity.key"}) {
		t.Fatalf("directory holds %v, want only identity.key", names)
	}
}

// marshal returns the key file bytes of k.
func marshal(t *testing.T, k crypto.PrivKey) []byte {
	t.Helper()
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCorruptKeyRejectedAndKept(t *testing.T) {
	good, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	valid := marshal(t, good)
	secp, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecdsaKey, _, err := crypto.GenerateECDSAKeyPair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	badHalf := slices.Clone(valid)
	badHalf[len(badHalf)-1] ^= 0x01
	garbage := make([]byte, 68)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		data []byte
		want string // in the message besides the path
	}{
		{"empty", []byte{}, "empty"},
		{"garbage", garbage, ""},
		{"text", []byte("not a key\n"), ""},
		{"truncated by one byte", valid[:len(valid)-1], ""},
		{"truncated half way", valid[:len(valid)/2], ""},
		{"truncated to header", valid[:4], ""},
		{"only the type", valid[:2], ""},
		{"one byte", valid[:1], ""},
		{"trailing public half altered", badHalf, "public half"},
		{"secp256k1 key", marshal(t, secp), "Secp256k1"},
		{"ecdsa key", marshal(t, ecdsaKey), "ECDSA"},
		{"raw ed25519 bytes without envelope", []byte(ed25519.NewKeyFromSeed(make([]byte, 32))), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "identity.key")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, call := range []struct {
				name string
				fn   func() error
			}{
				{"LoadOrCreate", func() error { _, _, _, err := LoadOrCreate(path); return err }},
				{"Load", func() error { _, _, err := Load(path); return err }},
			} {
				err := call.fn()
				if !errors.Is(err, ErrCorruptKey) {
					t.Fatalf("%s = %v, want ErrCorruptKey", call.name, err)
				}
				if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s message %q lacks the path or %q", call.name, err, tt.want)
				}
				after, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(after, tt.data) {
					t.Fatalf("%s changed the key file", call.name)
				}
				if runtime.GOOS != "windows" && mode(t, path) != 0o600 {
					t.Fatalf("%s changed the key file mode", call.name)
				}
				if names := dirNames(t, dir); !slices.Equal(names, []string{"identity.key"}) {
					t.Fatalf("%s left %v in the directory", call.name, names)
				}
			}
		})
	}
}

// TestLegacyKeyAccepted: libp2p once stored Ed25519 keys with the public key appended
// a second time (96 bytes); such files are valid identities.
func TestLegacyKeyAccepted(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// protobuf PrivateKey{Type: Ed25519 (1), Data: priv || pub}
	data := append([]byte{0x08, 0x01, 0x12, 96}, priv...)
	data = append(data, pub...)
	path := filepath.Join(t.TempDir(), "identity.key")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, id, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreate = %v, created %v", err, created)
	}
	lpub, err := crypto.UnmarshalEd25519PublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := peer.IDFromPublicKey(lpub); id != want {
		t.Fatalf("peer ID %s, want %s", id, want)
	}
}

func TestInsecureModeRejected(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	data := marshal(t, key)
	for m, who := range map[fs.FileMode]string{
		0o644: "readable by group and others",
		0o640: "readable by group",
		0o604: "readable by others",
		0o660: "readable and writable by group",
		0o666: "readable and writable by group and others",
		0o610: "executable by group",
	} {
		path := filepath.Join(t.TempDir(), "identity.key")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, m); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := LoadOrCreate(path)
		if !errors.Is(err, ErrInsecureKey) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("mode %#o: LoadOrCreate = %v, want ErrInsecureKey naming the path and the fix", m, err)
		}
		if want := path + " is " + who + " (mode " + fmt.Sprintf("%#o", m) + ")"; !strings.Contains(err.Error(), want) {
			t.Fatalf("mode %#o: error %q does not say %q", m, err, want)
		}
		after, _ := os.ReadFile(path)
		if !bytes.Equal(after, data) || mode(t, path) != m {
			t.Fatalf("mode %#o: the key file was modified", m)
		}
	}
	// Stricter than 0600 is fine.
	path := filepath.Join(t.TempDir(), "identity.key")
	if err := os.WriteFile(path, data, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestNotARegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.key")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, _, created, err := LoadOrCreate(path)
	if err == nil || created || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadOrCreate(directory) = %v, created %v", err, created)
	}
}
