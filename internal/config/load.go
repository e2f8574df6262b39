package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/p2p-ai-agents/p2p-agent/internal/oneline"
)

// LoadOptions are the sources Load merges, lowest precedence first.
type LoadOptions struct {
	// File is the YAML configuration file; empty means none.
	File string
	// Env is the environment in os.Environ form ("NAME=value"). Only names starting
	// with P2P_AGENT_ are considered (P2P_AGENT_API excepted). nil means no
	// environment: the CLI passes os.Environ(), tests pass what they need.
	Env []string
	// Flags maps a dotted key ("storage.redis.addrs") to its raw value as given on
	// the command line; lists are comma separated.
	Flags map[string]string
}

// setting is one raw value for one key from one source, before parsing.
type setting struct {
	def    *keyDef
	raw    string   // scalar value; lists from env and flags are split later
	list   []string // sequence value from a file
	isList bool     // the file gave a sequence
	source string   // where it came from, for error messages
}

// Load builds the configuration from defaults, opts.File, opts.Env and opts.Flags, in
// increasing precedence, and validates it. Every problem found is reported at once;
// the error wraps ErrInvalid and is an Errors listing each FieldError.
func Load(opts LoadOptions) (*Config, error) {
	var errs Errors
	var layers [][]setting

	if opts.File != "" {
		s, fileErrs, err := readFile(opts.File)
		if err != nil {
			return nil, err
		}
		errs = append(errs, fileErrs...)
		layers = append(layers, s)
	}
	s, envErrs := readEnv(opts.Env)
	errs = append(errs, envErrs...)
	layers = append(layers, s)
	s, flagErrs := readFlags(opts.Flags)
	errs = append(errs, flagErrs...)
	layers = append(layers, s)

	c := Default()
	sources := map[string]string{}
	for _, layer := range layers {
		for _, st := range layer {
			if fe := apply(c, st); fe != nil {
				errs = append(errs, fe)
				continue
			}
			sources[st.def.key] = st.source
		}
	}
	if c.Node.Name == "" {
		c.Node.Name = hostname()
	}
	// The default data_dir is expanded by Default when it can be; without a home
	// directory it cannot, and a directory literally named "~" would be a surprise.
	if dir, err := expandHome(c.Node.DataDir); err != nil {
		src, ok := sources["node.data_dir"]
		if !ok {
			src = "default"
		}
		errs = append(errs, &FieldError{Key: "node.data_dir", Value: c.Node.DataDir, Source: src,
			Reason: err.Error() + "; set node.data_dir explicitly"})
	} else {
		c.Node.DataDir = dir
	}

	// A key that did not even parse is reported once, not again by validation.
	bad := map[string]bool{}
	for _, e := range errs {
		bad[e.Key] = true
	}
	for _, e := range validate(c, sources) {
		if !bad[e.Key] {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	// storage.redis.url overrides storage.redis.addrs (whose default is never empty):
	// consumers see exactly one of them set.
	if c.Storage.Redis.URL != "" {
		c.Storage.Redis.Addrs = []string{}
	}
	return c, nil
}

// Check loads file alone (no environment, no flags) and validates it, for
// `p2p-agent config check FILE`.
func Check(file string) error {
	if file == "" {
		return fmt.Errorf("%w: no configuration file given", ErrInvalid)
	}
	_, err := Load(LoadOptions{File: file})
	return err
}

// readFile parses a YAML file strictly: every mapping key must be a section or a key
// of keyTable, each at most once. The tree is walked by hand, rather than decoded into
// a struct, so that an unknown key is named by its full dotted path and line and every
// value goes through the same parser as env and flags.
func readFile(path string) ([]setting, Errors, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading config file: %w", ErrInvalid, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, nil // empty file: nothing set
		}
		return nil, nil, fmt.Errorf("%w: config file %s: %s", ErrInvalid, path, oneline.Flatten(err.Error()))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%w: config file %s: more than one YAML document (or a syntax error after the first)", ErrInvalid, path)
	}
	root := deref(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = deref(root.Content[0])
	}
	if isNull(root) {
		return nil, nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%w: config file %s line %d: top level must be a mapping of sections", ErrInvalid, path, root.Line)
	}
	var out []setting
	var errs Errors
	walk(root, "", path, &out, &errs)
	return out, errs, nil
}

// walk collects the settings of mapping m whose keys are below prefix.
func walk(m *yaml.Node, prefix, file string, out *[]setting, errs *Errors) {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := deref(m.Content[i]), deref(m.Content[i+1])
		where := fmt.Sprintf("file %s line %d", file, k.Line)
		name := k.Value
		full := name
		if prefix != "" {
			full = prefix + "." + name
		}
		if k.Kind != yaml.ScalarNode || name == "<<" {
			*errs = append(*errs, &FieldError{Key: full, Source: where, Reason: "unsupported key (merge keys and complex keys are not allowed)", noValue: true})
			continue
		}
		if first, dup := seen[name]; dup {
			*errs = append(*errs, &FieldError{Key: full, Source: where, Reason: fmt.Sprintf("duplicate key (first set on line %d)", first), noValue: true})
			continue
		}
		seen[name] = k.Line

		if d, ok := keyIndex[full]; ok {
			st := setting{def: d, source: where}
			switch {
			case isNull(v):
			case v.Kind == yaml.ScalarNode:
				st.raw = v.Value
			case v.Kind == yaml.SequenceNode:
				st.isList = true
				st.list = []string{}
				for _, item := range v.Content {
					item = deref(item)
					if item.Kind != yaml.ScalarNode {
						*errs = append(*errs, &FieldError{Key: full, Source: fmt.Sprintf("file %s line %d", file, item.Line), Reason: "list items must be plain values", noValue: true})
						continue
					}
					if !isNull(item) {
						st.list = append(st.list, item.Value)
					}
				}
			default:
				*errs = append(*errs, &FieldError{Key: full, Source: where, Reason: "expected a value, got a mapping", noValue: true})
				continue
			}
			*out = append(*out, st)
			continue
		}
		if sections[full] {
			switch {
			case isNull(v):
			case v.Kind == yaml.MappingNode:
				walk(v, full, file, out, errs)
			default:
				*errs = append(*errs, &FieldError{Key: full, Source: where, Reason: "expected a mapping (section) of keys", noValue: true})
			}
			continue
		}
		*errs = append(*errs, &FieldError{Key: full, Source: where, Reason: "unknown key" + suggest(full, keyNames()), noValue: true})
	}
}

// deref follows YAML aliases.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// readEnv picks the configuration variables out of env.
func readEnv(env []string) ([]setting, Errors) {
	var out []setting
	var errs Errors
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || name == envAPI {
			continue
		}
		d, ok := envIndex[name]
		if !ok {
			errs = append(errs, &FieldError{Key: name, Source: "environment", Reason: "unknown configuration variable" + suggest(name, envNames()), noValue: true})
			continue
		}
		out = append(out, setting{def: d, raw: value, source: "env " + name})
	}
	return out, errs
}

// readFlags turns the CLI's --section.key flags into settings, in key order so errors
// come out the same every time.
func readFlags(flags map[string]string) ([]setting, Errors) {
	names := make([]string, 0, len(flags))
	for k := range flags {
		names = append(names, k)
	}
	slices.Sort(names)
	var out []setting
	var errs Errors
	for _, name := range names {
		key := strings.TrimPrefix(name, "--")
		d, ok := keyIndex[key]
		if !ok {
			errs = append(errs, &FieldError{Key: key, Source: "flag --" + key, Reason: "unknown flag" + suggest(key, keyNames()), noValue: true})
			continue
		}
		out = append(out, setting{def: d, raw: flags[name], source: "flag --" + key})
	}
	return out, errs
}

// apply parses st into its field of c.
func apply(c *Config, st setting) *FieldError {
	d := st.def
	shown := st.raw
	if st.isList {
		shown = strings.Join(st.list, ",")
	}
	fail := func(reason string) *FieldError {
		return &FieldError{Key: d.key, Value: displayValue(d, shown), Source: st.source, Reason: reason}
	}
	if _, isList := d.field(c).(*[]string); st.isList && !isList {
		return fail("expected a single value, got a list")
	}
	raw := strings.TrimSpace(st.raw)
	switch p := d.field(c).(type) {
	case *string:
		v := st.raw
		if d.path {
			var err error
			if v, err = expandHome(strings.TrimSpace(v)); err != nil {
				return fail(err.Error())
			}
		}
		*p = v
	case *[]string:
		items := st.list
		if !st.isList {
			items = strings.Split(st.raw, ",")
		}
		list := []string{}
		for _, it := range items {
			if it = strings.TrimSpace(it); it != "" {
				list = append(list, it)
			}
		}
		*p = list
	case *bool:
		v, ok := parseBool(raw)
		if !ok {
			return fail("not a boolean (true/false/1/0/yes/no)")
		}
		*p = v
	case *int:
		v, err := strconv.Atoi(raw)
		if err != nil {
			return fail("not an integer")
		}
		*p = v
	case *float64:
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return fail("not a finite number")
		}
		*p = v
	case *time.Duration:
		v, err := time.ParseDuration(raw)
		if err != nil {
			return fail("not a duration (e.g. 500ms, 5s, 1m30s)")
		}
		*p = v
	default:
		panic(fmt.Sprintf("config: key %s has unsupported field type %T", d.key, p))
	}
	return nil
}

// parseBool accepts the spellings documented for boolean keys, case-insensitively.
func parseBool(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "true", "1", "yes":
		return true, true
	case "false", "0", "no":
		return false, true
	}
	return false, false
}

// displayValue is a raw value as it may appear in an error: secrets are masked.
func displayValue(d *keyDef, v string) string {
	if !d.secret || v == "" {
		return v
	}
	if d.key == "storage.redis.url" {
		return redactURL(v)
	}
	return redactedMark
}

func keyNames() []string {
	out := make([]string, len(keyTable))
	for i := range keyTable {
		out[i] = keyTable[i].key
	}
	return out
}

func envNames() []string {
	out := make([]string, len(keyTable))
	for i := range keyTable {
		out[i] = envName(keyTable[i].key)
	}
	return out
}

// suggest returns " (did you mean X?)" for the candidate closest to name when it is
// close enough to be a typo, else "".
func suggest(name string, candidates []string) string {
	best, bestDist := "", len(name)/3+1
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(name), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
