package inject

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
)

const (
	k8sExamples     = "../examples/kubernetes"
	composeExamples = "../examples/docker-compose"
)

// exampleInjections are the `meshd inject` commands of
// examples/kubernetes/README.md, as flags and as the Options they mean.
var exampleInjections = []struct {
	file    string
	command string
	opts    Options
	service string
	env     []string
}{
	{
		file:    "web.yaml",
		command: `meshd inject -f web.yaml --image meshd:dev --env 'CONSUL_HTTP_ADDR=$(HOST_IP):8500' | kubectl apply -n meshd-demo -f -`,
		opts:    Options{Image: "meshd:dev", Env: []EnvVar{{"CONSUL_HTTP_ADDR", "$(HOST_IP):8500"}}},
		service: "web",
		env:     []string{"HOST_IP", "MESHD_SERVICE_NAME", "CONSUL_HTTP_ADDR"},
	},
	{
		file:    "payments.yaml",
		command: `meshd inject -f payments.yaml --image meshd:dev --env 'CONSUL_HTTP_ADDR=$(HOST_IP):8500' --env MESHD_CONSUL_REGISTER=true --env MESHD_APP_PORT=8080 | kubectl apply -n meshd-demo -f -`,
		opts: Options{Image: "meshd:dev", Env: []EnvVar{
			{"CONSUL_HTTP_ADDR", "$(HOST_IP):8500"}, {"MESHD_CONSUL_REGISTER", "true"}, {"MESHD_APP_PORT", "8080"}}},
		service: "payments",
		env:     []string{"HOST_IP", "MESHD_SERVICE_NAME", "CONSUL_HTTP_ADDR", "MESHD_CONSUL_REGISTER", "MESHD_APP_PORT"},
	},
}

// TestKubernetesExamples decodes every manifest of examples/kubernetes, and
// the injected output of web.yaml and payments.yaml, strictly into the
// Kubernetes API types.
func TestKubernetesExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(k8sExamples, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	manifests := 0
	for _, f := range files {
		if filepath.Base(f) == "consul-values.yaml" { // Helm values, not a manifest
			continue
		}
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(decodeAll(t, in)) == 0 {
			t.Errorf("%s holds no Kubernetes object", f)
		}
		manifests++
	}
	if manifests < 2 {
		t.Fatalf("found %d manifests in %s", manifests, k8sExamples)
	}

	readme, err := os.ReadFile(filepath.Join(k8sExamples, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range exampleInjections {
		t.Run(ex.file, func(t *testing.T) {
			if !bytes.Contains(readme, []byte(ex.command)) {
				t.Errorf("README.md lacks the command %s", ex.command)
			}
			in, err := os.ReadFile(filepath.Join(k8sExamples, ex.file))
			if err != nil {
				t.Fatal(err)
			}
			res, err := Inject(in, ex.opts)
			if err != nil {
				t.Fatal(err)
			}
			inObjs, outObjs := decodeAll(t, in), decodeAll(t, res.Output)
			if len(inObjs) != len(outObjs) {
				t.Fatalf("%d objects in, %d out", len(inObjs), len(outObjs))
			}
			deployments := 0
			for i, o := range outObjs {
				if o.spec == nil {
					if o.id != inObjs[i].id || !reflect.DeepEqual(o.value, inObjs[i].value) {
						t.Errorf("%s changed", o.id)
					}
					continue
				}
				deployments++
				w := defaults(ex.service, ex.service)
				w.image, w.env, w.userVolumes = "meshd:dev", ex.env, 1
				checkInjected(t, o, w)
				for _, c := range o.spec.InitContainers[:2] {
					for _, e := range c.Env {
						if e.Name == "CONSUL_HTTP_ADDR" && e.Value != "$(HOST_IP):8500" {
							t.Errorf("%s: %s CONSUL_HTTP_ADDR = %q", o.id, c.Name, e.Value)
						}
					}
				}
			}
			if deployments == 0 {
				t.Error("no workload injected")
			}
			again, err := Inject(res.Output, ex.opts)
			if err != nil || !bytes.Equal(again.Output, res.Output) {
				t.Errorf("second injection changed the output (err %v)", err)
			}
		})
	}

	// The programs in the ConfigMaps are the Compose example's files.
	for file, cm := range map[string]string{"web.yaml": "web.py", "payments.yaml": "payments.py"} {
		in, err := os.ReadFile(filepath.Join(k8sExamples, file))
		if err != nil {
			t.Fatal(err)
		}
		src, err := os.ReadFile(filepath.Join(composeExamples, cm))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, o := range decodeAll(t, in) {
			if c, ok := o.value.(*corev1.ConfigMap); ok && c.Data[cm] != "" {
				found = true
				if c.Data[cm] != string(src) {
					t.Errorf("%s: ConfigMap %s's %s differs from %s/%s", file, c.Name, cm, composeExamples, cm)
				}
			}
		}
		if !found {
			t.Errorf("%s has no ConfigMap with %s", file, cm)
		}
	}

	// The Helm values: a dev install as the README says.
	values, err := os.ReadFile(filepath.Join(k8sExamples, "consul-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Server struct {
			Replicas int `yaml:"replicas"`
		} `yaml:"server"`
		Client struct {
			Enabled bool `yaml:"enabled"`
		} `yaml:"client"`
		ConnectInject struct {
			Enabled *bool `yaml:"enabled"`
		} `yaml:"connectInject"`
	}
	if err := yaml.Unmarshal(values, &v); err != nil {
		t.Fatal(err)
	}
	if v.Server.Replicas != 1 || !v.Client.Enabled || v.ConnectInject.Enabled == nil || *v.ConnectInject.Enabled {
		t.Errorf("consul-values.yaml: %+v, want 1 server, clients on, connectInject explicitly off", v)
	}
}

// composeService is what the structure test reads of a Compose service.
type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	User        string            `yaml:"user"`
	NetworkMode string            `yaml:"network_mode"`
	CapAdd      []string          `yaml:"cap_add"`
	Profiles    []string          `yaml:"profiles"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// TestComposeExample checks the structure of
// examples/docker-compose/compose.yaml, and runs `docker compose config`
// on it when Docker Compose is installed.
func TestComposeExample(t *testing.T) {
	file := filepath.Join(composeExamples, "compose.yaml")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil { // merges the x- anchors
		t.Fatal(err)
	}
	svc := doc.Services
	if _, ok := svc["consul"]; !ok || svc["consul"].Healthcheck == nil {
		t.Error("no consul service with a health check")
	}
	apps := map[string]string{"web": "web", "payments": "payments", "payments-faulty": "payments"}
	for app, name := range apps {
		a, ok := svc[app]
		if !ok {
			t.Errorf("no service %s", app)
			continue
		}
		for _, v := range a.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if _, err := os.Stat(filepath.Join(composeExamples, src)); err != nil {
				t.Errorf("%s mounts %s: %v", app, src, err)
			}
		}
		ipt, ok := svc[app+"-iptables"]
		if !ok {
			t.Errorf("no service %s-iptables", app)
			continue
		}
		if ipt.NetworkMode != "service:"+app {
			t.Errorf("%s-iptables network_mode %q", app, ipt.NetworkMode)
		}
		if !slices.Equal(ipt.CapAdd, []string{"NET_ADMIN", "NET_RAW"}) {
			t.Errorf("%s-iptables cap_add %q, want exactly NET_ADMIN and NET_RAW", app, ipt.CapAdd)
		}
		if !slices.Equal(ipt.Command, []string{"iptables", "apply"}) || ipt.User != "0:0" {
			t.Errorf("%s-iptables command %q user %q", app, ipt.Command, ipt.User)
		}
		side, ok := svc[app+"-meshd"]
		if !ok {
			t.Errorf("no service %s-meshd", app)
			continue
		}
		if side.NetworkMode != "service:"+app {
			t.Errorf("%s-meshd network_mode %q", app, side.NetworkMode)
		}
		if len(side.CapAdd) != 0 || side.User != "" || !slices.Equal(side.Command, []string{"run"}) {
			t.Errorf("%s-meshd cap_add %q user %q command %q", app, side.CapAdd, side.User, side.Command)
		}
		if side.Image == "" || side.Image != ipt.Image {
			t.Errorf("%s: images %q and %q", app, side.Image, ipt.Image)
		}
		if c := side.DependsOn[app+"-iptables"].Condition; c != "service_completed_successfully" {
			t.Errorf("%s-meshd depends on %s-iptables with condition %q", app, app, c)
		}
		if c := side.DependsOn["consul"].Condition; c != "service_healthy" {
			t.Errorf("%s-meshd depends on consul with condition %q", app, c)
		}
		if side.Environment["MESHD_SERVICE_NAME"] != name || side.Environment["CONSUL_HTTP_ADDR"] != "consul:8500" {
			t.Errorf("%s-meshd environment %v", app, side.Environment)
		}
		if side.Healthcheck == nil || !slices.Contains(side.Healthcheck.Test, "wait-ready") {
			t.Errorf("%s-meshd has no wait-ready health check", app)
		}
		if name == "payments" && (side.Environment["MESHD_CONSUL_REGISTER"] != "true" || side.Environment["MESHD_APP_PORT"] != "8080") {
			t.Errorf("%s-meshd does not register payments: %v", app, side.Environment)
		}
		if faulty := app == "payments-faulty"; faulty != slices.Equal(side.Profiles, []string{"faulty"}) ||
			faulty != slices.Equal(ipt.Profiles, []string{"faulty"}) || faulty != slices.Equal(a.Profiles, []string{"faulty"}) {
			t.Errorf("%s: profiles %q %q %q", app, a.Profiles, ipt.Profiles, side.Profiles)
		}
	}

	if _, err := exec.LookPath("docker"); err != nil {
		t.Log("docker not on PATH: structure checked, docker compose config skipped")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "compose", "version").Run(); err != nil {
		t.Log("docker compose not available: structure checked, docker compose config skipped")
		return
	}
	out, err := exec.CommandContext(ctx, "docker", "compose", "-f", file, "--profile", "faulty", "config", "--quiet").CombinedOutput()
	if err != nil {
		t.Errorf("docker compose config: %v\n%s", err, out)
	}
}
