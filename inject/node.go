package inject

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Helpers over yaml.v3 nodes. The injector edits the parsed tree in place,
// so that everything it does not touch (key order, quoting, comments) is
// written back as it was read.

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is missing or an explicit null (`key:` or
// `key: null`), which Kubernetes treats as absent.
func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// lookup returns the value of key in mapping m, or nil.
func lookup(m *yaml.Node, key string) *yaml.Node {
	m = resolve(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return resolve(m.Content[i+1])
		}
	}
	return nil
}

// path follows keys through nested mappings; nil when any is missing.
func path(m *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		m = lookup(m, k)
		if m == nil {
			return nil
		}
	}
	return m
}

// scalar returns the value of key in m when it is a scalar, else "".
func scalar(m *yaml.Node, keys ...string) string {
	n := path(m, keys...)
	if n == nil || n.Kind != yaml.ScalarNode || isNull(n) {
		return ""
	}
	return n.Value
}

// setKey sets key in mapping m to v: it replaces the value of an existing
// key, else inserts the pair before the key named before (when present)
// or at the end.
func setKey(m *yaml.Node, key string, v *yaml.Node, before string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	k := strNode(key)
	if before != "" {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == before {
				m.Content = append(m.Content[:i], append([]*yaml.Node{k, v}, m.Content[i:]...)...)
				return
			}
		}
	}
	m.Content = append(m.Content, k, v)
}

// child returns the mapping or sequence under key in m, creating it (in
// place of a missing key or a null) when create is true. It fails when the
// key holds something of another kind.
func child(m *yaml.Node, key string, kind yaml.Kind, before string) (*yaml.Node, error) {
	if n := lookup(m, key); !isNull(n) {
		if n.Kind != kind {
			return nil, fmt.Errorf("%s is a %s, expected a %s", key, kindName(n.Kind), kindName(kind))
		}
		return n, nil
	}
	n := &yaml.Node{Kind: kind}
	switch kind {
	case yaml.MappingNode:
		n.Tag = "!!map"
	case yaml.SequenceNode:
		n.Tag = "!!seq"
	}
	setKey(m, key, n, before)
	return n, nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	}
	return "node"
}

// strNode is a string scalar; the encoder quotes it when it would otherwise
// read back as another type.
func strNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if looksTyped(s) {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

// looksTyped reports whether a plain scalar s would be read as something
// other than a string by a YAML 1.2 parser or a YAML 1.1 one (kubectl's):
// numbers, booleans, null, timestamps, 1.1's yes/no/on/off and its
// number forms (1_000, 12:30, 0x1F).
func looksTyped(s string) bool {
	if s == "" {
		return true
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(s), &n); err != nil || len(n.Content) != 1 ||
		n.Content[0].Kind != yaml.ScalarNode || n.Content[0].ShortTag() != "!!str" || n.Content[0].Value != s {
		return true
	}
	switch strings.ToLower(s) {
	case "y", "yes", "n", "no", "on", "off", "=", "<<":
		return true
	}
	if strings.ContainsRune("0123456789+-.", rune(s[0])) &&
		strings.Trim(s, "0123456789_:.+-eExXoObBaAcCdDfF") == "" {
		return true
	}
	return false
}

// encodeNode turns a Go value into a node tree.
func encodeNode(v any) *yaml.Node {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		// Only the fixed types of this package are encoded; they always
		// encode.
		panic(fmt.Sprintf("inject: encoding %T: %v", v, err))
	}
	return &n
}

// findNamed returns the index of the element of sequence s whose name is
// name, or -1.
func findNamed(s *yaml.Node, name string) int {
	if s == nil || s.Kind != yaml.SequenceNode {
		return -1
	}
	for i, c := range s.Content {
		if scalar(c, "name") == name {
			return i
		}
	}
	return -1
}

// insertAt inserts n into sequence s at index i.
func insertAt(s *yaml.Node, i int, n *yaml.Node) {
	s.Content = append(s.Content[:i], append([]*yaml.Node{n}, s.Content[i:]...)...)
}
