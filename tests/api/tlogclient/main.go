// Command tlogclient audits an immutrail ledger served as a C2SP tlog-tiles log
// (https://c2sp.org/tlog-tiles) with Go's reference code only: golang.org/x/mod/sumdb/note
// verifies the checkpoint, golang.org/x/mod/sumdb/tlog reads and authenticates the hash tiles
// (TileHashReader) and proves each entry's inclusion (ProveRecord, CheckRecord). No immutrail
// code is involved: this is what a mirror, monitor or witness would run.
//
// Usage:
//
//	tlogclient -url http://127.0.0.1:PORT/tlog -vkey VKEY [-token imt_…] [-every N]
//
// It fetches <url>/checkpoint, verifies it, then for every N-th entry (and the last) reads its
// leaf hash through the tiles, proves it into the checkpoint's root, and fetches every entry
// bundle, checking that each entry hashes (RFC 6962) to the leaf the tiles hold.
//
// tlog names tiles tile/8/<L>/<N>[.p/<W>] and entry tiles tile/8/data/<N>; C2SP drops the
// height: tile/<L>/<N>[.p/<W>] and tile/entries/<N>[.p/<W>], N spelled the same way.
//
// Prints one JSON object on success. Exit 1: something does not verify (the reason on
// stderr); 2: usage.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

type client struct {
	base    string
	token   string
	http    *http.Client
	fetched map[string]int
}

func (c *client) get(path string) ([]byte, error) {
	req, err := http.NewRequest("GET", c.base+"/"+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, data)
	}
	c.fetched[path]++
	return data, nil
}

// c2spPath maps tlog's tile path to the C2SP one.
func c2spPath(t tlog.Tile) string {
	p := t.Path()
	prefix := fmt.Sprintf("tile/%d/", height)
	if !strings.HasPrefix(p, prefix) {
		panic("unexpected tile path " + p)
	}
	rest := strings.TrimPrefix(p, prefix)
	if strings.HasPrefix(rest, "data/") {
		return "tile/entries/" + strings.TrimPrefix(rest, "data/")
	}
	return "tile/" + rest
}

// tileReader implements tlog.TileReader over HTTP, keeping what it read in memory.
type tileReader struct {
	c     *client
	cache map[tlog.Tile][]byte
}

func (r *tileReader) Height() int { return height }

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if data, ok := r.cache[t]; ok {
			out[i] = data
			continue
		}
		data, err := r.c.get(c2spPath(t))
		if err != nil {
			return nil, err
		}
		if len(data) != t.W*tlog.HashSize {
			return nil, fmt.Errorf("%s: %d bytes, want %d", c2spPath(t), len(data), t.W*tlog.HashSize)
		}
		r.cache[t] = data
		out[i] = data
	}
	return out, nil
}

func (r *tileReader) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func parseCheckpoint(text string) (string, int64, tlog.Hash, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if !strings.HasSuffix(text, "\n") || len(lines) < 3 {
		return "", 0, tlog.Hash{}, errors.New("checkpoint: want origin, size and root lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return "", 0, tlog.Hash{}, fmt.Errorf("checkpoint: bad size %q", lines[1])
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return "", 0, tlog.Hash{}, fmt.Errorf("checkpoint: bad root %q", lines[2])
	}
	var root tlog.Hash
	copy(root[:], raw)
	return lines[0], size, root, nil
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "tlogclient: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	base := flag.String("url", "", "the log's prefix, e.g. http://127.0.0.1:8700/tlog")
	vkey := flag.String("vkey", "", "the ledger's verifier key (name+hash+base64)")
	token := flag.String("token", "", "an API token (entry bundles may need one)")
	every := flag.Int64("every", 1, "prove every N-th entry (and the last)")
	flag.Parse()
	if *base == "" || *vkey == "" || *every < 1 {
		flag.Usage()
		os.Exit(2)
	}
	c := &client{base: strings.TrimSuffix(*base, "/"), token: *token,
		http: &http.Client{Timeout: 30 * time.Second}, fetched: map[string]int{}}

	verifier, err := note.NewVerifier(*vkey)
	if err != nil {
		fail("verifier key: %v", err)
	}
	msg, err := c.get("checkpoint")
	if err != nil {
		fail("%v", err)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint signature: %v", err)
	}
	origin, size, root, err := parseCheckpoint(n.Text)
	if err != nil {
		fail("%v", err)
	}
	tree := tlog.Tree{N: size, Hash: root}
	reader := &tileReader{c: c, cache: map[tlog.Tile][]byte{}}
	hashes := tlog.TileHashReader(tree, reader)

	// The tiles must yield the checkpoint's root.
	got, err := tlog.TreeHash(size, hashes)
	if err != nil {
		fail("tree hash: %v", err)
	}
	if got != root {
		fail("the tiles give root %v, the checkpoint says %v", got, root)
	}

	leaf := func(i int64) tlog.Hash {
		h, err := hashes.ReadHashes([]int64{tlog.StoredHashIndex(0, i)})
		if err != nil {
			fail("leaf %d: %v", i, err)
		}
		return h[0]
	}
	proved := 0
	for i := int64(0); i < size; i++ {
		if i%*every != 0 && i != size-1 {
			continue
		}
		p, err := tlog.ProveRecord(size, i, hashes)
		if err != nil {
			fail("prove %d: %v", i, err)
		}
		if err := tlog.CheckRecord(p, size, root, i, leaf(i)); err != nil {
			fail("check %d: %v", i, err)
		}
		proved++
	}

	entries := int64(0)
	for k := int64(0); k*256 < size; k++ {
		w := size - k*256
		if w > 256 {
			w = 256
		}
		path := c2spPath(tlog.Tile{H: height, L: -1, N: k, W: int(w)})
		data, err := c.get(path)
		if err != nil {
			fail("%v", err)
		}
		indexes := make([]int64, w)
		for j := range indexes {
			indexes[j] = tlog.StoredHashIndex(0, k*256+int64(j))
		}
		leaves, err := hashes.ReadHashes(indexes)
		if err != nil {
			fail("leaves of %s: %v", path, err)
		}
		for j := int64(0); j < w; j++ {
			if len(data) < 2 {
				fail("%s: ends before entry %d", path, j)
			}
			length := int(binary.BigEndian.Uint16(data[:2]))
			if len(data) < 2+length {
				fail("%s: entry %d is cut short", path, j)
			}
			entry := data[2 : 2+length]
			data = data[2+length:]
			if tlog.RecordHash(entry) != leaves[j] {
				fail("entry %d does not hash to its leaf", k*256+j)
			}
			entries++
		}
		if len(data) != 0 {
			fail("%s: %d bytes after the last entry", path, len(data))
		}
	}
	paths := make([]string, 0, len(c.fetched))
	for p := range c.fetched {
		paths = append(paths, p)
	}
	out, _ := json.Marshal(map[string]any{
		"origin": origin, "size": size, "root": base64.StdEncoding.EncodeToString(root[:]),
		"proved": proved, "entries": entries, "fetched": paths,
	})
	fmt.Println(string(out))
}
