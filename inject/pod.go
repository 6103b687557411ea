package inject

import (
	"errors"

	"go.yaml.in/yaml/v3"
)

// The containers inject adds, as ordered structs so that the output has a
// stable, readable field order. Field names are the Kubernetes API's.

type container struct {
	Name            string          `yaml:"name"`
	Image           string          `yaml:"image"`
	ImagePullPolicy string          `yaml:"imagePullPolicy,omitempty"`
	Args            []string        `yaml:"args,flow"`
	RestartPolicy   string          `yaml:"restartPolicy,omitempty"`
	Env             []envVar        `yaml:"env,omitempty"`
	Ports           []containerPort `yaml:"ports,omitempty"`
	Lifecycle       *lifecycle      `yaml:"lifecycle,omitempty"`
	StartupProbe    *probe          `yaml:"startupProbe,omitempty"`
	ReadinessProbe  *probe          `yaml:"readinessProbe,omitempty"`
	LivenessProbe   *probe          `yaml:"livenessProbe,omitempty"`
	Resources       resources       `yaml:"resources"`
	SecurityContext securityContext `yaml:"securityContext"`
	VolumeMounts    []volumeMount   `yaml:"volumeMounts,omitempty"`
}

type envVar struct {
	Name      string     `yaml:"name"`
	Value     string     `yaml:"value,omitempty"`
	ValueFrom *envSource `yaml:"valueFrom,omitempty"`
}

type envSource struct {
	FieldRef struct {
		FieldPath string `yaml:"fieldPath"`
	} `yaml:"fieldRef"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}

type lifecycle struct {
	PostStart struct {
		Exec struct {
			Command []string `yaml:"command,flow"`
		} `yaml:"exec"`
	} `yaml:"postStart"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port int    `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold,omitempty"`
}

type resources struct {
	Requests struct {
		CPU    string `yaml:"cpu"`
		Memory string `yaml:"memory"`
	} `yaml:"requests"`
	Limits struct {
		Memory string `yaml:"memory"`
	} `yaml:"limits"`
}

type securityContext struct {
	RunAsUser                int64  `yaml:"runAsUser"`
	RunAsGroup               *int64 `yaml:"runAsGroup,omitempty"`
	RunAsNonRoot             bool   `yaml:"runAsNonRoot"`
	AllowPrivilegeEscalation bool   `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   bool   `yaml:"readOnlyRootFilesystem"`
	Capabilities             struct {
		Add  []string `yaml:"add,omitempty,flow"`
		Drop []string `yaml:"drop,flow"`
	} `yaml:"capabilities"`
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
}

type volume struct {
	Name     string `yaml:"name"`
	EmptyDir struct {
		Medium    string `yaml:"medium"`
		SizeLimit string `yaml:"sizeLimit"`
	} `yaml:"emptyDir"`
}

// podSpec adds what is missing of meshd to a pod spec and reports whether
// it changed anything.
func (s *settings) podSpec(spec *yaml.Node, service string) (bool, error) {
	containers := lookup(spec, "containers")
	if containers == nil || containers.Kind != yaml.SequenceNode || len(containers.Content) == 0 {
		return false, errors.New("containers is missing or empty")
	}
	inits := lookup(spec, "initContainers")
	if inits != nil && !isNull(inits) && inits.Kind != yaml.SequenceNode {
		return false, errors.New("initContainers is not a list")
	}
	hasInit := findNamed(inits, InitContainerName) >= 0
	hasSidecar := findNamed(inits, SidecarName) >= 0 || findNamed(containers, SidecarName) >= 0
	changed := false
	env := s.env(service)
	if !hasInit || (!hasSidecar && s.Mode == Native) {
		var err error
		if inits, err = child(spec, "initContainers", yaml.SequenceNode, "containers"); err != nil {
			return false, err
		}
	}
	if !hasInit {
		insertAt(inits, 0, encodeNode(s.initContainer(env)))
		changed = true
	}
	if !hasSidecar {
		c := s.sidecar(env)
		if s.Mode == Native {
			insertAt(inits, findNamed(inits, InitContainerName)+1, encodeNode(c))
		} else {
			insertAt(containers, 0, encodeNode(c))
		}
		changed = true
	}
	volumes, err := child(spec, "volumes", yaml.SequenceNode, "")
	if err != nil {
		return false, err
	}
	if findNamed(volumes, RunVolumeName) < 0 {
		v := volume{Name: RunVolumeName}
		v.EmptyDir.Medium, v.EmptyDir.SizeLimit = "Memory", "1Mi"
		volumes.Content = append(volumes.Content, encodeNode(v))
		changed = true
	}
	return changed, nil
}

// env is the environment of both meshd containers: HOST_IP (so that
// CONSUL_HTTP_ADDR can be "$(HOST_IP):8500", the node's Consul agent), the
// service name, then the user's variables in their order.
func (s *settings) env(service string) []envVar {
	var out []envVar
	if !s.hasHostIP {
		e := envVar{Name: "HOST_IP", ValueFrom: &envSource{}}
		e.ValueFrom.FieldRef.FieldPath = "status.hostIP"
		out = append(out, e)
	}
	if !s.hasServiceName && service != "" {
		out = append(out, envVar{Name: "MESHD_SERVICE_NAME", Value: service})
	}
	for _, e := range s.Env {
		out = append(out, envVar{Name: e.Name, Value: e.Value})
	}
	return out
}

func (s *settings) resources() resources {
	var r resources
	r.Requests.CPU, r.Requests.Memory = "50m", "32Mi"
	r.Limits.Memory = "128Mi"
	return r
}

// initContainer runs `meshd iptables apply` as root with only NET_ADMIN
// and NET_RAW. /run is an emptyDir so that iptables-legacy can take its
// lock file (/run/xtables.lock) although the root filesystem is read-only.
func (s *settings) initContainer(env []envVar) container {
	c := container{
		Name:            InitContainerName,
		Image:           s.Image,
		ImagePullPolicy: s.ImagePullPolicy,
		Args:            []string{"iptables", "apply"},
		Env:             env,
		Resources:       s.resources(),
		VolumeMounts:    []volumeMount{{Name: RunVolumeName, MountPath: "/run"}},
	}
	sc := &c.SecurityContext
	sc.RunAsUser, sc.RunAsNonRoot = 0, false
	sc.AllowPrivilegeEscalation, sc.ReadOnlyRootFilesystem = false, true
	sc.Capabilities.Add = []string{"NET_ADMIN", "NET_RAW"}
	sc.Capabilities.Drop = []string{"ALL"}
	sc.SeccompProfile.Type = "RuntimeDefault"
	return c
}

// sidecar runs `meshd run` as the proxy uid, with no capabilities.
func (s *settings) sidecar(env []envVar) container {
	c := container{
		Name:            SidecarName,
		Image:           s.Image,
		ImagePullPolicy: s.ImagePullPolicy,
		Args:            []string{"run"},
		Env:             env,
		Ports: []containerPort{
			{Name: "meshd-outbound", ContainerPort: s.outbound},
			{Name: "meshd-inbound", ContainerPort: s.inbound},
			{Name: "meshd-health", ContainerPort: s.health},
		},
		StartupProbe:   s.probe("/ready", 1, 60),
		ReadinessProbe: s.probe("/ready", 2, 0),
		LivenessProbe:  s.probe("/healthz", 10, 0),
		Resources:      s.resources(),
	}
	if s.Mode == Native {
		c.RestartPolicy = "Always"
	} else {
		c.Lifecycle = &lifecycle{}
		c.Lifecycle.PostStart.Exec.Command = []string{BinaryPath, "wait-ready", "--timeout=60s"}
	}
	sc := &c.SecurityContext
	uid := s.uid
	sc.RunAsUser, sc.RunAsGroup, sc.RunAsNonRoot = uid, &uid, true
	sc.AllowPrivilegeEscalation, sc.ReadOnlyRootFilesystem = false, true
	sc.Capabilities.Drop = []string{"ALL"}
	sc.SeccompProfile.Type = "RuntimeDefault"
	return c
}

func (s *settings) probe(path string, period, failures int) *probe {
	p := &probe{PeriodSeconds: period, FailureThreshold: failures}
	p.HTTPGet.Path, p.HTTPGet.Port = path, s.health
	return p
}
