package inject

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// refresh reports whether golden files are to be rewritten (-update or
// REFRESH_GOLDEN=1).
func refresh() bool { return *update || os.Getenv("REFRESH_GOLDEN") == "1" }

// want is what a test expects of every injected pod spec.
type want struct {
	mode        SidecarMode
	image       string
	pullPolicy  corev1.PullPolicy
	uid         int64
	health      int32
	service     string   // MESHD_SERVICE_NAME
	env         []string // names, in order, of the meshd containers' env
	appInits    []string // the workload's own init containers, in order
	apps        []string // the workload's own containers, in order
	userVolumes int      // volumes of the workload's own
}

func defaults(service string, apps ...string) want {
	return want{mode: Native, image: DefaultImage, uid: 1337, health: 15021, service: service,
		env: []string{"HOST_IP", "MESHD_SERVICE_NAME"}, apps: apps}
}

var goldenCases = []struct {
	name     string
	opts     Options
	injected map[string]want // by Kind/name; every other workload must come out unchanged
	notes    []string        // substrings expected among Result.Notes
}{
	{name: "pod", injected: map[string]want{"Pod/hello": defaults("hello", "hello")}},
	{
		name: "deployment",
		opts: Options{Env: []EnvVar{{"CONSUL_HTTP_ADDR", "$(HOST_IP):8500"}, {"MESHD_ACCESS_LOG", "true"}}},
		injected: map[string]want{"Deployment/web": func() want {
			w := defaults("web", "web")
			w.env = append(w.env, "CONSUL_HTTP_ADDR", "MESHD_ACCESS_LOG")
			w.appInits = []string{"migrate"}
			return w
		}()},
	},
	{
		name: "statefulset",
		opts: Options{Image: "registry.example.com/meshd:1.2.3", ImagePullPolicy: "IfNotPresent",
			Env: []EnvVar{{"MESHD_SERVICE_NAME", "ledger-db"}, {"MESHD_PROXY_UID", "2000"}, {"MESHD_HEALTH_ADDR", ":16021"}}},
		injected: map[string]want{"StatefulSet/ledger": {mode: Native, image: "registry.example.com/meshd:1.2.3",
			pullPolicy: corev1.PullIfNotPresent, uid: 2000, health: 16021, service: "ledger-db",
			env: []string{"HOST_IP", "MESHD_SERVICE_NAME", "MESHD_PROXY_UID", "MESHD_HEALTH_ADDR"}, apps: []string{"ledger"}}},
		notes: []string{"StatefulSet/ledger: warning: terminationGracePeriodSeconds is 5"},
	},
	{name: "daemonset", injected: map[string]want{"DaemonSet/node-agent": func() want {
		w := defaults("node-agent", "agent")
		w.userVolumes = 1
		return w
	}()}},
	{name: "replicaset", injected: map[string]want{"ReplicaSet/search": defaults("search", "search")}},
	{name: "job", injected: map[string]want{"Job/report": defaults("report", "report")}},
	{name: "cronjob", injected: map[string]want{"CronJob/nightly-billing": defaults("billing", "billing")}},
	{name: "multi", injected: map[string]want{"Deployment/payments": defaults("payments", "payments")}},
	{
		name: "optout",
		notes: []string{
			`Deployment/legacy: not injected: annotation meshd.io/inject is "false"`,
			`Deployment/batch-worker: not injected: annotation meshd.io/inject is "false"`,
			"DaemonSet/node-exporter: not injected: hostNetwork",
		},
	},
	{
		name: "classic",
		opts: Options{Mode: Classic},
		injected: map[string]want{"Deployment/web": func() want {
			w := defaults("web", "web")
			w.mode = Classic
			w.appInits = []string{"migrate"}
			return w
		}()},
	},
	{name: "list", injected: map[string]want{"Deployment/orders": defaults("orders", "orders")}},
	{name: "partial", injected: map[string]want{"Pod/partial": func() want {
		w := defaults("partial", "app")
		w.image = "meshd:0.9" // the hand-written meshd-init is kept as it was
		return w
	}()}},
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", tc.name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			res, err := Inject(in, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name+".golden")
			if refresh() {
				if err := os.WriteFile(golden, res.Output, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			exp, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update or REFRESH_GOLDEN=1 to create it)", err)
			}
			if !bytes.Equal(res.Output, exp) {
				t.Errorf("output differs from %s (run with -update or REFRESH_GOLDEN=1 to refresh):\n%s", golden, res.Output)
			}
			var ids []string
			for id := range tc.injected {
				ids = append(ids, id)
			}
			slices.Sort(ids)
			got := slices.Clone(res.Injected)
			slices.Sort(got)
			if !slices.Equal(got, ids) {
				t.Errorf("Injected = %q, want %q", got, ids)
			}
			for _, n := range tc.notes {
				if !slices.ContainsFunc(res.Notes, func(s string) bool { return strings.Contains(s, n) }) {
					t.Errorf("Notes %q lack %q", res.Notes, n)
				}
			}

			// Every input and output document decodes strictly into the
			// Kubernetes API types; injected pods have exactly what the
			// contract says, the others are unchanged.
			inObjs := decodeAll(t, in)
			outObjs := decodeAll(t, res.Output)
			if len(inObjs) != len(outObjs) {
				t.Fatalf("%d objects in, %d out", len(inObjs), len(outObjs))
			}
			for i, o := range outObjs {
				if o.id != inObjs[i].id {
					t.Fatalf("object %d is %s, was %s", i, o.id, inObjs[i].id)
				}
				w, ok := tc.injected[o.id]
				if !ok {
					if !reflect.DeepEqual(o.value, inObjs[i].value) {
						t.Errorf("%s changed although not injected", o.id)
					}
					continue
				}
				if o.spec == nil {
					t.Fatalf("%s has no pod spec", o.id)
				}
				checkInjected(t, o, w)
			}

			// Idempotence: injecting the output again changes nothing.
			again, err := Inject(res.Output, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again.Output, res.Output) {
				t.Errorf("second injection changed the output:\n%s", again.Output)
			}
			if len(again.Injected) != 0 {
				t.Errorf("second injection injected %q", again.Injected)
			}
		})
	}
}

// object is one decoded Kubernetes object.
type object struct {
	id          string // Kind/name
	value       any    // the typed object
	spec        *corev1.PodSpec
	annotations map[string]string // of the pod (template)
}

// decodeAll splits a stream as kubectl does and decodes every document
// strictly (unknown or duplicate fields fail) into its Kubernetes type.
func decodeAll(t *testing.T, stream []byte) []object {
	t.Helper()
	var out []object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, decodeDoc(t, doc)...)
	}
}

func decodeDoc(t *testing.T, doc []byte) []object {
	t.Helper()
	var meta struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	if meta.Kind == "" {
		return nil // a comment-only document
	}
	o := object{id: meta.Kind + "/" + meta.Metadata.Name}
	strict := func(v any) {
		t.Helper()
		if err := yaml.UnmarshalStrict(doc, v); err != nil {
			t.Fatalf("%s does not decode strictly: %v\n%s", o.id, err, doc)
		}
		o.value = v
	}
	tmpl := func(p *corev1.PodTemplateSpec) {
		o.spec, o.annotations = &p.Spec, p.Annotations
	}
	switch meta.Kind {
	case "Pod":
		v := &corev1.Pod{}
		strict(v)
		o.spec, o.annotations = &v.Spec, v.Annotations
	case "Deployment":
		v := &appsv1.Deployment{}
		strict(v)
		tmpl(&v.Spec.Template)
	case "StatefulSet":
		v := &appsv1.StatefulSet{}
		strict(v)
		tmpl(&v.Spec.Template)
	case "DaemonSet":
		v := &appsv1.DaemonSet{}
		strict(v)
		tmpl(&v.Spec.Template)
	case "ReplicaSet":
		v := &appsv1.ReplicaSet{}
		strict(v)
		tmpl(&v.Spec.Template)
	case "Job":
		v := &batchv1.Job{}
		strict(v)
		tmpl(&v.Spec.Template)
	case "CronJob":
		v := &batchv1.CronJob{}
		strict(v)
		tmpl(&v.Spec.JobTemplate.Spec.Template)
	case "Service":
		strict(&corev1.Service{})
	case "ConfigMap":
		strict(&corev1.ConfigMap{})
	case "List":
		v := &corev1.List{}
		strict(v)
		var items []object
		for _, it := range v.Items {
			items = append(items, decodeDoc(t, it.Raw)...)
		}
		return items
	default:
		t.Fatalf("test does not know kind %s", meta.Kind)
	}
	return []object{o}
}

// checkInjected asserts the contract's init container and sidecar.
func checkInjected(t *testing.T, o object, w want) {
	t.Helper()
	spec := o.spec
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(o.id+": "+format, args...)
	}
	if o.annotations[AnnotationInjected] != "true" {
		fail("annotation %s = %q", AnnotationInjected, o.annotations[AnnotationInjected])
	}
	var initNames, names []string
	for _, c := range spec.InitContainers {
		initNames = append(initNames, c.Name)
	}
	for _, c := range spec.Containers {
		names = append(names, c.Name)
	}
	wantInits := []string{InitContainerName}
	wantNames := w.apps
	if w.mode == Native {
		wantInits = append(wantInits, SidecarName)
	} else {
		wantNames = append([]string{SidecarName}, wantNames...)
	}
	wantInits = append(wantInits, w.appInits...)
	if !slices.Equal(initNames, wantInits) || !slices.Equal(names, wantNames) {
		fail("initContainers %q containers %q, want %q and %q", initNames, names, wantInits, wantNames)
		return
	}
	init := spec.InitContainers[0]
	sidecar := spec.Containers[0]
	if w.mode == Native {
		sidecar = spec.InitContainers[1]
	}

	// meshd-init
	if w.image == "meshd:0.9" { // a hand-written meshd-init, kept as it was
		if init.Image != w.image {
			fail("meshd-init image %q", init.Image)
		}
	} else {
		if init.Image != w.image || init.ImagePullPolicy != w.pullPolicy {
			fail("meshd-init image %q %q", init.Image, init.ImagePullPolicy)
		}
		if !slices.Equal(init.Args, []string{"iptables", "apply"}) || init.RestartPolicy != nil {
			fail("meshd-init args %q restartPolicy %v", init.Args, init.RestartPolicy)
		}
		sc := init.SecurityContext
		if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 0 || sc.RunAsNonRoot == nil || *sc.RunAsNonRoot ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Privileged != nil ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "NET_RAW"}) ||
			!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			fail("meshd-init securityContext %+v", sc)
		}
		if len(init.VolumeMounts) != 1 || init.VolumeMounts[0].Name != RunVolumeName || init.VolumeMounts[0].MountPath != "/run" {
			fail("meshd-init volumeMounts %+v", init.VolumeMounts)
		}
		checkEnv(t, o.id+": meshd-init", init.Env, w)
	}
	var run *corev1.Volume
	for i, v := range spec.Volumes {
		if v.Name == RunVolumeName {
			run = &spec.Volumes[i]
		}
	}
	if run == nil || run.EmptyDir == nil || len(spec.Volumes) != w.userVolumes+1 {
		fail("volumes %+v", spec.Volumes)
	}

	// meshd
	if sidecar.Image != w.image && w.image != "meshd:0.9" || !slices.Equal(sidecar.Args, []string{"run"}) {
		fail("sidecar image %q args %q", sidecar.Image, sidecar.Args)
	}
	if w.mode == Native {
		if sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways || sidecar.Lifecycle != nil {
			fail("native sidecar restartPolicy %v lifecycle %+v", sidecar.RestartPolicy, sidecar.Lifecycle)
		}
	} else {
		if sidecar.RestartPolicy != nil || sidecar.Lifecycle == nil || sidecar.Lifecycle.PostStart == nil ||
			sidecar.Lifecycle.PostStart.Exec == nil ||
			!slices.Equal(sidecar.Lifecycle.PostStart.Exec.Command, []string{BinaryPath, "wait-ready", "--timeout=60s"}) {
			fail("classic sidecar restartPolicy %v lifecycle %+v", sidecar.RestartPolicy, sidecar.Lifecycle)
		}
	}
	sc := sidecar.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != w.uid || sc.RunAsGroup == nil || *sc.RunAsGroup != w.uid ||
		sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || len(sc.Capabilities.Add) != 0 || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		fail("sidecar securityContext %+v", sc)
	}
	ports := map[string]int32{}
	for _, p := range sidecar.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if !reflect.DeepEqual(ports, map[string]int32{"meshd-outbound": 15001, "meshd-inbound": 15006, "meshd-health": w.health}) {
		fail("sidecar ports %v", ports)
	}
	for name, p := range map[string]struct {
		probe *corev1.Probe
		path  string
	}{"startup": {sidecar.StartupProbe, "/ready"}, "readiness": {sidecar.ReadinessProbe, "/ready"}, "liveness": {sidecar.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.IntValue() != int(w.health) {
			fail("sidecar %s probe %+v, want GET %s on %d", name, p.probe, p.path, w.health)
		}
	}
	r := sidecar.Resources
	if r.Requests.Cpu().String() != "50m" || r.Requests.Memory().String() != "32Mi" || r.Limits.Memory().String() != "128Mi" || !r.Limits.Cpu().IsZero() {
		fail("sidecar resources %+v", r)
	}
	checkEnv(t, o.id+": meshd", sidecar.Env, w)
}

func checkEnv(t *testing.T, who string, env []corev1.EnvVar, w want) {
	t.Helper()
	var names []string
	for _, e := range env {
		names = append(names, e.Name)
		switch e.Name {
		case "MESHD_SERVICE_NAME":
			if e.Value != w.service {
				t.Errorf("%s: MESHD_SERVICE_NAME = %q, want %q", who, e.Value, w.service)
			}
		case "HOST_IP":
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.hostIP" {
				t.Errorf("%s: HOST_IP = %+v", who, e)
			}
		}
	}
	if !slices.Equal(names, w.env) {
		t.Errorf("%s: env %q, want %q", who, names, w.env)
	}
}

// TestUnchangedDocumentsAreVerbatim: a document inject does not change is
// written back byte for byte, comments and quoting included.
func TestUnchangedDocumentsAreVerbatim(t *testing.T) {
	in, err := os.ReadFile("testdata/multi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Inject(in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range split(in) {
		if bytes.Contains(c.text, []byte("kind: Deployment")) {
			continue
		}
		if !bytes.Contains(res.Output, c.text) {
			t.Errorf("output lacks the unchanged document\n%s", c.text)
		}
	}
	opt, err := os.ReadFile("testdata/optout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := Inject(opt, Options{}); err != nil || !bytes.Equal(res.Output, opt) {
		t.Errorf("opted-out input changed (err %v):\n%s", err, res.Output)
	}
}

// TestAlreadyInjectedBySidecarName: a pod that already runs a container
// named meshd gets no second one, whichever mode injects it.
func TestAlreadyInjectedInOtherMode(t *testing.T) {
	in, err := os.ReadFile("testdata/classic.golden")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Inject(in, Options{Mode: Native})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Output, in) {
		t.Errorf("native injection of a classic-injected Deployment changed it:\n%s", res.Output)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name, in string
		opts     Options
		want     string // substring of the error
		line     int    // DocumentError.Line, 0 = not a DocumentError
	}{
		{name: "invalid yaml", in: "apiVersion: v1\nkind: Service\n---\nkind: Pod\nmetadata:\n  name: [a\n", want: "invalid YAML", line: 5},
		{name: "bad indentation", in: "kind: Service\n---\nkind: Pod\nmetadata:\n  name: a\n   labels: x\n", want: "invalid YAML: mapping values are not allowed", line: 6},
		{name: "tab indentation", in: "kind: Pod\nspec:\n\tcontainers: []\n", want: "invalid YAML", line: 3},
		{name: "two documents in one chunk", in: "kind: Pod\n--- # x\nkind: Pod\n", want: "more than one YAML document"},
		{name: "no template", in: "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n", want: "Deployment/x: spec.template is missing", line: 1},
		{name: "no containers", in: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n", want: "Pod/p: spec: containers is missing or empty", line: 1},
		{name: "initContainers not a list", in: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: {}\n  containers: [{name: a, image: b}]\n", want: "initContainers is not a list", line: 1},
		{name: "annotations not a map", in: "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: [x]}\nspec:\n  containers: [{name: a, image: b}]\n", want: "annotations is a list, expected a mapping", line: 1},
		{name: "bad mode", in: "", opts: Options{Mode: "sidecar"}, want: `sidecar mode "sidecar"`},
		{name: "bad pull policy", in: "", opts: Options{ImagePullPolicy: "always"}, want: `image pull policy "always"`},
		{name: "bad uid", in: "", opts: Options{Env: []EnvVar{{"MESHD_PROXY_UID", "0"}}}, want: "MESHD_PROXY_UID"},
		{name: "bad port", in: "", opts: Options{Env: []EnvVar{{"MESHD_HEALTH_ADDR", ":99999"}}}, want: "MESHD_HEALTH_ADDR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Inject([]byte(tc.in), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			var de *DocumentError
			if tc.line != 0 && (!errors.As(err, &de) || de.Line != tc.line) {
				t.Errorf("err = %#v, want a DocumentError at line %d", err, tc.line)
			}
		})
	}
}

func TestSplit(t *testing.T) {
	cases := []struct {
		in    string
		texts []string
		lines []int
	}{
		{"", nil, nil},
		{"a: 1\n", []string{"a: 1\n"}, []int{1}},
		{"---\na: 1\n---\nb: 2", []string{"a: 1\n", "b: 2"}, []int{2, 4}},
		{"a: 1\r\n--- \r\n\r\nb: 2\r\n", []string{"a: 1\r\n", "\r\nb: 2\r\n"}, []int{1, 3}},
		{"a: |\n  ---\n----\n---x\n", []string{"a: |\n  ---\n----\n---x\n"}, []int{1}},
		{"a: 1\n---\n\n---\n# c\n", []string{"a: 1\n", "# c\n"}, []int{1, 5}},
	}
	for _, tc := range cases {
		var texts []string
		var lines []int
		for _, c := range split([]byte(tc.in)) {
			texts = append(texts, string(c.text))
			lines = append(lines, c.line)
		}
		if !slices.Equal(texts, tc.texts) || !slices.Equal(lines, tc.lines) {
			t.Errorf("split(%q) = %q at %v, want %q at %v", tc.in, texts, lines, tc.texts, tc.lines)
		}
	}
}

func TestLooksTyped(t *testing.T) {
	for s, typed := range map[string]bool{
		"": true, "true": true, "False": true, "yes": true, "on": true, "OFF": true, "y": true, "null": true, "~": true,
		"1337": true, "0x1F": true, "1_000": true, "12:30": true, "1e3": true, ".5": true, "-1": true, "2026-01-02": true,
		"a: b": true, "- a": true, "#x": true, " a": true,
		"web": false, "50m": false, "32Mi": false, "meshd:latest": false, "$(HOST_IP):8500": false, "http://consul:8500": false,
		"payments.service.consul": false, "MESHD_SERVICE_NAME": false,
	} {
		if got := looksTyped(s); got != typed {
			t.Errorf("looksTyped(%q) = %v, want %v", s, got, typed)
		}
	}
}

// TestGeneratedStringsStayStrings: a value that a YAML parser would read
// as a bool or a number is quoted, so the env value arrives as a string.
func TestGeneratedStringsStayStrings(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: b}]\n"
	vals := []string{"true", "on", "yes", "8080", "1_000", "12:30", "", "null", "0x10", "2026-01-02"}
	var env []EnvVar
	for i, v := range vals {
		env = append(env, EnvVar{Name: "V" + string(rune('A'+i)), Value: v})
	}
	res, err := Inject([]byte(in), Options{Env: env})
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(res.Output, &pod); err != nil {
		t.Fatalf("%v\n%s", err, res.Output)
	}
	got := map[string]string{}
	for _, e := range pod.Spec.InitContainers[1].Env {
		got[e.Name] = e.Value
	}
	for _, e := range env {
		if got[e.Name] != e.Value {
			t.Errorf("%s = %q, want %q", e.Name, got[e.Name], e.Value)
		}
	}
}

func TestParseEnvVar(t *testing.T) {
	for in, want := range map[string]EnvVar{
		"A=1":                              {"A", "1"},
		"A=":                               {"A", ""},
		"URL=http://x/?a=b":                {"URL", "http://x/?a=b"},
		"CONSUL_HTTP_ADDR=$(HOST_IP):8500": {"CONSUL_HTTP_ADDR", "$(HOST_IP):8500"},
	} {
		got, err := ParseEnvVar(in)
		if err != nil || got != want {
			t.Errorf("ParseEnvVar(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"A", "=1", "A B=1", ""} {
		if _, err := ParseEnvVar(in); err == nil {
			t.Errorf("ParseEnvVar(%q) succeeded", in)
		}
	}
}

// TestServiceNameOrder: app.kubernetes.io/name wins over app, which wins
// over the workload's name.
func TestServiceNameOrder(t *testing.T) {
	pod := func(labels string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-name\n  labels: {" + labels + "}\nspec:\n  containers: [{name: a, image: b}]\n"
	}
	for labels, want := range map[string]string{
		"app.kubernetes.io/name: k8s-name, app: app-label": "k8s-name",
		"app: app-label": "app-label",
		"":               "pod-name",
	} {
		res, err := Inject([]byte(pod(labels)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		var p corev1.Pod
		if err := yaml.UnmarshalStrict(res.Output, &p); err != nil {
			t.Fatal(err)
		}
		if got := p.Spec.InitContainers[1].Env[1]; got.Name != "MESHD_SERVICE_NAME" || got.Value != want {
			t.Errorf("labels {%s}: %+v, want MESHD_SERVICE_NAME=%s", labels, got, want)
		}
	}
}
