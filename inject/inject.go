// Package inject adds meshd to Kubernetes workloads: it reads manifests
// (one or more YAML documents), adds the iptables init container and the
// meshd sidecar to every pod template it finds, and writes the manifests
// back. It is what `meshd inject` runs.
//
// It works on generic YAML trees, not on Kubernetes API types, so that
// fields it does not know pass through untouched and the meshd binary does
// not carry the Kubernetes client libraries. A document it does not change
// (a Service, a ConfigMap, an opted-out or already injected workload) is
// written back byte for byte; a document it changes is re-encoded, which
// keeps key order and most comments but normalises indentation.
//
// Injection is idempotent: containers that are already there (by name) are
// never added twice, so inject(inject(x)) == inject(x) byte for byte.
package inject

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Names that injection writes into manifests.
const (
	// AnnotationInject on a workload or its pod template opts it out of
	// injection when its value is "false".
	AnnotationInject = "meshd.io/inject"
	// AnnotationInjected is set to "true" on every pod (template) that
	// inject changed.
	AnnotationInjected = "meshd.io/injected"
	// InitContainerName is the init container that runs
	// `meshd iptables apply`.
	InitContainerName = "meshd-init"
	// SidecarName is the meshd sidecar container.
	SidecarName = "meshd"
	// RunVolumeName is the emptyDir mounted at /run in the init container,
	// where iptables-legacy takes its lock (/run/xtables.lock) under a
	// read-only root filesystem.
	RunVolumeName = "meshd-init-run"
	// DefaultImage is the image used when Options.Image is empty.
	DefaultImage = "meshd:latest"
	// BinaryPath is where the meshd image keeps the binary; the classic
	// sidecar's postStart hook runs it.
	BinaryPath = "/usr/local/bin/meshd"
	// MinGracePeriodSeconds is the terminationGracePeriodSeconds below
	// which inject warns: meshd drains for up to MESHD_DRAIN_TIMEOUT (5 s
	// by default) after the app has stopped.
	MinGracePeriodSeconds = 10
)

// SidecarMode says how the meshd container is added to a pod.
type SidecarMode string

// Sidecar modes.
const (
	// Native adds meshd as an init container with restartPolicy Always
	// (a Kubernetes sidecar container, Kubernetes 1.29 and later): it
	// starts, and is ready, before the app's containers, and stops after
	// them.
	Native SidecarMode = "native"
	// Classic adds meshd as the first regular container, with a postStart
	// hook that holds the app's containers until meshd is ready, for
	// clusters older than 1.29.
	Classic SidecarMode = "classic"
)

// ParseSidecarMode parses "native" or "classic".
func ParseSidecarMode(s string) (SidecarMode, error) {
	switch m := SidecarMode(s); m {
	case Native, Classic:
		return m, nil
	}
	return "", fmt.Errorf("sidecar mode %q: expected native or classic", s)
}

// EnvVar is one environment variable given to both meshd containers.
type EnvVar struct {
	Name  string
	Value string
}

// ParseEnvVar parses NAME=VALUE (VALUE may be empty and may contain "=").
func ParseEnvVar(s string) (EnvVar, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" || strings.ContainsAny(name, " \t\n\r") {
		return EnvVar{}, fmt.Errorf("env %q: expected NAME=VALUE", s)
	}
	return EnvVar{Name: name, Value: value}, nil
}

// Options says what to inject.
type Options struct {
	// Image of both meshd containers; DefaultImage when empty.
	Image string
	// ImagePullPolicy of both containers (Always, IfNotPresent, Never);
	// empty leaves Kubernetes' default.
	ImagePullPolicy string
	// Mode of the sidecar; Native when empty.
	Mode SidecarMode
	// Env is set, in this order, on both meshd containers (the init
	// container reads the iptables settings from it, the sidecar the
	// rest). MESHD_SERVICE_NAME, when not given, is derived per workload.
	// MESHD_PROXY_UID, MESHD_OUTBOUND_ADDR, MESHD_INBOUND_ADDR and
	// MESHD_HEALTH_ADDR, when given, also set the sidecar's user, ports
	// and probes.
	Env []EnvVar
}

// settings are the Options resolved and checked.
type settings struct {
	Options
	uid                       int64
	outbound, inbound, health int
	hasServiceName, hasHostIP bool
}

func (o Options) resolve() (*settings, error) {
	s := &settings{Options: o, uid: 1337, outbound: 15001, inbound: 15006, health: 15021}
	if s.Image == "" {
		s.Image = DefaultImage
	}
	if s.Mode == "" {
		s.Mode = Native
	}
	if _, err := ParseSidecarMode(string(s.Mode)); err != nil {
		return nil, err
	}
	switch s.ImagePullPolicy {
	case "", "Always", "IfNotPresent", "Never":
	default:
		return nil, fmt.Errorf("image pull policy %q: expected Always, IfNotPresent or Never", s.ImagePullPolicy)
	}
	for _, e := range s.Env {
		var err error
		switch e.Name {
		case "MESHD_SERVICE_NAME":
			s.hasServiceName = true
		case "HOST_IP":
			s.hasHostIP = true
		case "MESHD_PROXY_UID":
			s.uid, err = strconv.ParseInt(e.Value, 10, 32)
			if err != nil || s.uid <= 0 {
				err = fmt.Errorf("MESHD_PROXY_UID=%q: expected a uid other than 0 (the sidecar runs as non-root)", e.Value)
			}
		case "MESHD_OUTBOUND_ADDR":
			s.outbound, err = portOf(e)
		case "MESHD_INBOUND_ADDR":
			s.inbound, err = portOf(e)
		case "MESHD_HEALTH_ADDR":
			s.health, err = portOf(e)
		}
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

func portOf(e EnvVar) (int, error) {
	_, p, err := net.SplitHostPort(e.Value)
	if err == nil {
		var n int
		n, err = strconv.Atoi(p)
		if err == nil && n >= 1 && n <= 65535 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s=%q: expected host:port with a port from 1 to 65535", e.Name, e.Value)
}

// Result is the outcome of Inject.
type Result struct {
	// Output is the manifests with meshd added.
	Output []byte
	// Injected names the workloads that were changed, as Kind/name.
	Injected []string
	// Notes are workloads left alone and why (opted out, host network,
	// already injected), and things worth a warning; one line each.
	Notes []string
}

// DocumentError is an input document that could not be read or injected.
type DocumentError struct {
	// Index is the 1-based number of the document in the input.
	Index int
	// Line is the input line of a YAML syntax error, else the line the
	// document starts at (1-based).
	Line int
	// Err is what went wrong.
	Err error
}

// Error implements error.
func (e *DocumentError) Error() string {
	return fmt.Sprintf("document %d, line %d: %v", e.Index, e.Line, e.Err)
}

// yamlLine matches the position the YAML parser puts in its messages.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// docError places err in the input: a YAML syntax error's line, which
// counts from the document's start, becomes a line of the input.
func docError(index, start int, err error) *DocumentError {
	de := &DocumentError{Index: index, Line: start, Err: err}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		if n, convErr := strconv.Atoi(m[1]); convErr == nil {
			de.Line = start + n - 1
			de.Err = errors.New("invalid YAML: " + strings.TrimPrefix(err.Error(), m[0]))
		}
	}
	return de
}

// Unwrap returns the underlying error.
func (e *DocumentError) Unwrap() error { return e.Err }

// Inject adds meshd to every workload in the YAML stream in. Documents are
// separated by lines of three dashes, as kubectl splits them.
func Inject(in []byte, opts Options) (*Result, error) {
	s, err := opts.resolve()
	if err != nil {
		return nil, err
	}
	res := &Result{}
	var out bytes.Buffer
	for i, c := range split(in) {
		text, err := s.document(c.text, res)
		if err != nil {
			return nil, docError(i+1, c.line, err)
		}
		if out.Len() > 0 {
			out.WriteString("---\n")
		}
		out.Write(text)
		if len(text) > 0 && text[len(text)-1] != '\n' {
			out.WriteByte('\n')
		}
	}
	res.Output = out.Bytes()
	return res, nil
}

type chunk struct {
	text []byte
	line int
}

// split cuts a stream into documents at lines that are "---" followed by
// nothing but white space, as kubectl does. Chunks that hold only white
// space are dropped.
func split(in []byte) []chunk {
	var out []chunk
	start, startLine, line := 0, 1, 1
	flush := func(end int) {
		if len(bytes.TrimSpace(in[start:end])) > 0 {
			out = append(out, chunk{text: in[start:end], line: startLine})
		}
	}
	for pos := 0; pos < len(in); line++ {
		end := bytes.IndexByte(in[pos:], '\n')
		if end < 0 {
			end = len(in)
		} else {
			end += pos + 1
		}
		l := in[pos:end]
		if bytes.HasPrefix(l, []byte("---")) && len(bytes.TrimSpace(l[3:])) == 0 {
			flush(pos)
			start, startLine = end, line+1
		}
		pos = end
	}
	flush(len(in))
	return out
}

// document injects one document; it returns the text unchanged when there
// is nothing to do.
func (s *settings) document(text []byte, res *Result) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(text))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return text, nil // only comments
	} else if err != nil {
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, errors.New(`more than one YAML document; separate documents with a line "---"`)
	}
	if len(doc.Content) != 1 {
		return text, nil
	}
	changed, err := s.object(doc.Content[0], res)
	if err != nil || !changed {
		return text, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// object injects one Kubernetes object (or the items of a List) and
// reports whether it changed anything.
func (s *settings) object(obj *yaml.Node, res *Result) (bool, error) {
	obj = resolve(obj)
	if obj == nil || obj.Kind != yaml.MappingNode {
		return false, nil
	}
	kind, apiVersion := scalar(obj, "kind"), scalar(obj, "apiVersion")
	if items := lookup(obj, "items"); strings.HasSuffix(kind, "List") && items != nil && items.Kind == yaml.SequenceNode {
		changed := false
		for i, it := range items.Content {
			c, err := s.object(it, res)
			if err != nil {
				return false, fmt.Errorf("%s item %d: %w", kind, i+1, err)
			}
			changed = changed || c
		}
		return changed, nil
	}
	group, _, _ := strings.Cut(apiVersion, "/")
	if !strings.Contains(apiVersion, "/") {
		group = ""
	}
	var templatePath []string
	switch {
	case kind == "Pod" && group == "":
		templatePath = nil
	case (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" || kind == "ReplicaSet") &&
		(group == "apps" || group == "extensions"):
		templatePath = []string{"spec", "template"}
	case kind == "Job" && group == "batch":
		templatePath = []string{"spec", "template"}
	case kind == "CronJob" && group == "batch":
		templatePath = []string{"spec", "jobTemplate", "spec", "template"}
	default:
		return false, nil
	}
	name := scalar(obj, "metadata", "name")
	if name == "" {
		name = scalar(obj, "metadata", "generateName")
	}
	id := kind + "/" + name
	tmpl := obj
	if templatePath != nil {
		tmpl = path(obj, templatePath...)
		if tmpl == nil || tmpl.Kind != yaml.MappingNode {
			return false, fmt.Errorf("%s: %s is missing", id, strings.Join(templatePath, "."))
		}
	}
	if optedOut(obj) || optedOut(tmpl) {
		res.Notes = append(res.Notes, fmt.Sprintf("%s: not injected: annotation %s is \"false\"", id, AnnotationInject))
		return false, nil
	}
	spec := lookup(tmpl, "spec")
	specPath := strings.Join(append(templatePath, "spec"), ".")
	if spec == nil || spec.Kind != yaml.MappingNode {
		return false, fmt.Errorf("%s: %s is missing", id, specPath)
	}
	if v := scalar(spec, "hostNetwork"); v == "true" {
		res.Notes = append(res.Notes, fmt.Sprintf("%s: not injected: hostNetwork pods share the node's network namespace, where meshd's iptables rules would capture the node's traffic", id))
		return false, nil
	}
	changed, err := s.podSpec(spec, serviceName(obj, tmpl))
	if err != nil {
		return false, fmt.Errorf("%s: %s: %w", id, specPath, err)
	}
	meta, err := child(tmpl, "metadata", yaml.MappingNode, "spec")
	if err != nil {
		return false, fmt.Errorf("%s: %w", id, err)
	}
	ann, err := child(meta, "annotations", yaml.MappingNode, "")
	if err != nil {
		return false, fmt.Errorf("%s: metadata: %w", id, err)
	}
	if scalar(ann, AnnotationInjected) != "true" {
		setKey(ann, AnnotationInjected, strNode("true"), "")
		changed = true
	}
	if !changed {
		res.Notes = append(res.Notes, id+": already injected")
		return false, nil
	}
	if g := scalar(spec, "terminationGracePeriodSeconds"); g != "" {
		if n, err := strconv.Atoi(g); err == nil && n < MinGracePeriodSeconds {
			res.Notes = append(res.Notes, fmt.Sprintf("%s: warning: terminationGracePeriodSeconds is %d; meshd drains for up to MESHD_DRAIN_TIMEOUT (5s) after the app stops, give the pod at least %d", id, n, MinGracePeriodSeconds))
		}
	}
	res.Injected = append(res.Injected, id)
	return true, nil
}

// optedOut reports whether an object's annotations say not to inject.
func optedOut(obj *yaml.Node) bool {
	return strings.EqualFold(scalar(obj, "metadata", "annotations", AnnotationInject), "false")
}

// serviceName is the default MESHD_SERVICE_NAME of a workload: the pod
// template's app.kubernetes.io/name or app label, else the workload's
// name.
func serviceName(obj, tmpl *yaml.Node) string {
	for _, l := range []string{"app.kubernetes.io/name", "app"} {
		if v := scalar(tmpl, "metadata", "labels", l); v != "" {
			return v
		}
	}
	return scalar(obj, "metadata", "name")
}
