// Command noteverify checks immutrail's signed notes with Go's reference
// implementation of C2SP signed-note, golang.org/x/mod/sumdb/note, used unchanged.
//
// Usage:
//
//	noteverify [-checkpoint] VKEY [NOTE-FILE]
//
// VKEY is a verifier key in the note "name+hash+base64key" form. The signed
// note is read from NOTE-FILE, or from stdin when it is absent or "-".
// The bytes are passed to note.Open exactly as read: nothing is trimmed.
//
// Without -checkpoint it prints the verified note text (note.Note.Text) to stdout.
// With -checkpoint it also parses the verified text as a C2SP tlog-checkpoint
// (https://c2sp.org/tlog-checkpoint) and prints one JSON object instead:
//
//	{"origin": "...", "size": N, "root": "<base64>", "extensions": [...],
//	 "signers": [{"name": "...", "hash": "8 hex digits"}]}
//
// Exit status: 0 verified (and parsed); 1 the key, the note or the checkpoint
// was rejected (the reason on stderr); 2 usage error.
//
// Building, fully offline, with the Debian packages golang-go (Go 1.19) and
// golang-golang-x-mod-dev (x/mod 0.7.0 source in /usr/share/gocode/src):
// GOPATH mode, so no module download, go.sum or proxy is involved. See
// ../build-noteverify.sh, which runs
//
//	GO111MODULE=off GOPATH=$TMP/gopath:/usr/share/gocode GOPROXY=off GOFLAGS= \
//	    go build -o OUT tests/interop/noteverify/main.go
//
// Module mode works as well (checked with Go 1.19.8: a go.mod with
// "require golang.org/x/mod v0.7.0" and
// "replace golang.org/x/mod => /usr/share/gocode/src/golang.org/x/mod", built with
// GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off), but GOPATH mode needs no go.mod to keep
// in step with the packaged version. The program only uses the standard library
// and x/mod/sumdb/note, which itself only imports the standard library.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type signer struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

type checkpoint struct {
	Origin     string   `json:"origin"`
	Size       uint64   `json:"size"`
	Root       string   `json:"root"`
	Extensions []string `json:"extensions"`
	Signers    []signer `json:"signers"`
}

// parseCheckpoint parses a checkpoint body as C2SP tlog-checkpoint specifies:
// origin line, decimal tree size, base64 root hash, then zero or more non-empty
// extension lines, every line ending in a newline.
func parseCheckpoint(text string) (*checkpoint, error) {
	if !strings.HasSuffix(text, "\n") {
		return nil, errors.New("checkpoint: text does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return nil, fmt.Errorf("checkpoint: %d lines, want at least 3 (origin, size, root)", len(lines))
	}
	for i, l := range lines {
		if l == "" {
			return nil, fmt.Errorf("checkpoint: line %d is empty", i+1)
		}
	}
	origin, sizeText, rootText := lines[0], lines[1], lines[2]
	for _, c := range sizeText {
		if c < '0' || c > '9' {
			return nil, fmt.Errorf("checkpoint: size %q is not a decimal number", sizeText)
		}
	}
	if len(sizeText) > 1 && sizeText[0] == '0' {
		return nil, fmt.Errorf("checkpoint: size %q has a leading zero", sizeText)
	}
	size, err := strconv.ParseUint(sizeText, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: size %q: %v", sizeText, err)
	}
	root, err := base64.StdEncoding.Strict().DecodeString(rootText)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: root %q is not standard base64: %v", rootText, err)
	}
	if len(root) != 32 {
		return nil, fmt.Errorf("checkpoint: root is %d bytes, want 32 (SHA-256)", len(root))
	}
	return &checkpoint{Origin: origin, Size: size, Root: rootText, Extensions: append([]string{}, lines[3:]...)}, nil
}

func main() {
	log := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "noteverify: "+format+"\n", args...) }
	asCheckpoint := flag.Bool("checkpoint", false, "parse the verified text as a C2SP tlog-checkpoint, print JSON")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: noteverify [-checkpoint] VKEY [NOTE-FILE|-]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() < 1 || flag.NArg() > 2 {
		flag.Usage()
		os.Exit(2)
	}
	vkey := flag.Arg(0)

	var msg []byte
	var err error
	if flag.NArg() == 2 && flag.Arg(1) != "-" {
		msg, err = os.ReadFile(flag.Arg(1))
	} else {
		msg, err = io.ReadAll(os.Stdin)
	}
	if err != nil {
		log("reading the note: %v", err)
		os.Exit(2)
	}

	v, err := note.NewVerifier(vkey)
	if err != nil {
		log("verifier key %q: %v", vkey, err)
		os.Exit(1)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		log("%v", err)
		os.Exit(1)
	}
	for _, s := range n.Sigs {
		log("verified signature by %s+%08x", s.Name, s.Hash)
	}
	for _, s := range n.UnverifiedSigs {
		log("ignored signature by unknown key %s+%08x", s.Name, s.Hash)
	}

	if !*asCheckpoint {
		os.Stdout.WriteString(n.Text)
		return
	}
	c, err := parseCheckpoint(n.Text)
	if err != nil {
		log("%v", err)
		os.Exit(1)
	}
	for _, s := range n.Sigs {
		c.Signers = append(c.Signers, signer{Name: s.Name, Hash: fmt.Sprintf("%08x", s.Hash)})
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		log("%v", err)
		os.Exit(1)
	}
	os.Stdout.Write(out.Bytes())
}
