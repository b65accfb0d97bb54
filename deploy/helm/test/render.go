// Command render renders the codeq Helm chart the way `helm template`
// does (Go's text/template with the sprig functions, plus Helm's own
// include and toYaml) for several sets of values, then checks the
// Kubernetes objects: the fields the API server requires, and that the
// objects refer to one another correctly (selectors, services, volumes,
// secrets, config maps, ports).
//
// What it does not do: validate against the Kubernetes OpenAPI schemas,
// or run Helm's lint. A `helm` binary cannot be had on the build machines;
// when it can, `helm template deploy/helm/codeq` and `helm lint` are the
// stronger checks.
//
// Usage: go run render.go CHART_DIR (CHART_DUMP=1 prints the objects)
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"gopkg.in/yaml.v3"
)

type object = map[string]interface{}

// A set of values to render with, and the kinds it must produce.
type scenario struct {
	name      string
	overrides string
	kinds     []string
}

var scenarios = []scenario{
	{"embedded with static tokens", `
secrets:
  staticTokens: [{tokenSha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", kind: producer, sub: api, admin: true}]
`, []string{"ConfigMap", "Secret", "Service", "Service", "StatefulSet"}},
	{"embedded with a JWKS", `
config: {identityServiceUrl: "https://id.example", workerJwksUrl: "https://id.example/workers/jwks.json", workerIssuer: workers}
`, []string{"ConfigMap", "Secret", "Service", "Service", "StatefulSet"}},
	{"embedded, monitored, existing secret", `
secrets: {existingSecret: codeq-tokens}
serviceMonitor: {enabled: true, labels: {release: prometheus}}
podDisruptionBudget: {enabled: true}
prometheusRule: {enabled: true}
persistence: {storageClassName: fast}
`, []string{"ConfigMap", "PodDisruptionBudget", "PrometheusRule", "Service", "Service", "ServiceMonitor", "StatefulSet"}},
	{"redis with kvrocks", `
storage: redis
replicaCount: 3
kvrocks: {enabled: true}
secrets:
  staticTokens: [{tokenSha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", kind: producer, sub: api, admin: true}]
  redisPassword: s3cret
serviceMonitor: {enabled: true}
podDisruptionBudget: {enabled: true}
`, []string{"ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service", "Service", "ServiceMonitor", "StatefulSet"}},
	{"redis with an ACL user", `
storage: redis
redis: {addr: "redis.cache:6379", username: codeq}
secrets:
  staticTokens: [{tokenSha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", kind: producer, sub: api, admin: true}]
  redisPassword: s3cret
`, []string{"ConfigMap", "Deployment", "Secret", "Service"}},
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: render CHART_DIR")
	}
	chart := os.Args[1]
	if _, err := tryRender(chart, ""); err == nil || !strings.Contains(err.Error(), "without tokens") {
		fail("the defaults (no tokens) must be refused with a message, got %v", err)
	}
	fmt.Println("chart: defaults without tokens: refused with a message")
	for _, s := range scenarios {
		objects := render(chart, s.overrides)
		var kinds []string
		for _, o := range objects {
			kinds = append(kinds, str(o, "kind"))
		}
		sort.Strings(kinds)
		if strings.Join(kinds, ",") != strings.Join(s.kinds, ",") {
			fail("%s: rendered %v, want %v", s.name, kinds, s.kinds)
		}
		if os.Getenv("CHART_DUMP") != "" {
			for _, o := range objects {
				fmt.Printf("---\n%s\n", toYAML(o))
			}
		}
		check(s.name, objects)
		fmt.Printf("chart: %s: %d objects rendered and checked\n", s.name, len(objects))
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "chart check failed: "+format+"\n", args...)
	os.Exit(1)
}

// tryRender renders every template of the chart with its values.yaml,
// the overrides merged over them, and returns the Kubernetes objects.
func tryRender(chart, overrides string) ([]object, error) {
	values := readYAML(filepath.Join(chart, "values.yaml"))
	if overrides != "" {
		var over object
		must(yaml.Unmarshal([]byte(overrides), &over))
		values = mergeValues(values, over)
	}
	meta := readYAML(filepath.Join(chart, "Chart.yaml"))
	context := object{
		"Values":  values,
		"Release": object{"Name": "queue", "Namespace": "jobs", "Service": "Helm"},
		"Chart": object{"Name": meta["name"], "Version": meta["version"],
			"AppVersion": meta["appVersion"]},
	}
	root := template.New("chart").Option("missingkey=error")
	funcs := sprig.TxtFuncMap()
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var out bytes.Buffer
		err := root.ExecuteTemplate(&out, name, data)
		return out.String(), err
	}
	funcs["toYaml"] = toYAML
	root.Funcs(funcs)
	files, err := filepath.Glob(filepath.Join(chart, "templates", "*"))
	must(err)
	sort.Strings(files)
	for _, file := range files {
		text, err := os.ReadFile(file)
		must(err)
		_, err = root.New(filepath.Base(file)).Parse(string(text))
		must(err)
	}
	var objects []object
	for _, file := range files {
		name := filepath.Base(file)
		if strings.HasPrefix(name, "_") || name == "NOTES.txt" {
			continue
		}
		var out bytes.Buffer
		if err := root.ExecuteTemplate(&out, name, context); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, document := range strings.Split(out.String(), "\n---") {
			var o object
			if err := yaml.Unmarshal([]byte(document), &o); err != nil {
				fail("%s renders invalid YAML: %v\n%s", name, err, document)
			}
			if o != nil {
				objects = append(objects, o)
			}
		}
	}
	var notes bytes.Buffer
	if err := root.ExecuteTemplate(&notes, "NOTES.txt", context); err != nil {
		return nil, fmt.Errorf("NOTES.txt: %w", err)
	}
	return objects, nil
}

// render is tryRender, failing the check on an error.
func render(chart, overrides string) []object {
	objects, err := tryRender(chart, overrides)
	if err != nil {
		fail("%v", err)
	}
	return objects
}

// Helm's toYaml: YAML with two-space indents, no trailing newline.
func toYAML(v interface{}) string {
	var out bytes.Buffer
	encoder := yaml.NewEncoder(&out)
	encoder.SetIndent(2)
	if err := encoder.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(out.String(), "\n")
}

// mergeValues merges b over a, recursively for maps (Helm's -f rule).
func mergeValues(a, b object) object {
	out := object{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(object); ok {
			if am, ok := out[k].(object); ok {
				out[k] = mergeValues(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func readYAML(path string) object {
	text, err := os.ReadFile(path)
	must(err)
	var o object
	must(yaml.Unmarshal(text, &o))
	return o
}

func must(err error) {
	if err != nil {
		fail("%v", err)
	}
}

// --------------------------------------------------------------- checks

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

var apiVersions = map[string]string{
	"ConfigMap": "v1", "Secret": "v1", "Service": "v1", "StatefulSet": "apps/v1",
	"Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1",
	"ServiceMonitor": "monitoring.coreos.com/v1", "PrometheusRule": "monitoring.coreos.com/v1",
}

func check(scenario string, objects []object) {
	byKind := map[string][]object{}
	for _, o := range objects {
		kind := str(o, "kind")
		name := str(o, "metadata", "name")
		where := fmt.Sprintf("%s: %s %s", scenario, kind, name)
		if want, known := apiVersions[kind]; !known || str(o, "apiVersion") != want {
			fail("%s: apiVersion %q", where, str(o, "apiVersion"))
		}
		if len(name) > 63 || !dnsLabel.MatchString(name) {
			fail("%s: name is not a DNS label", where)
		}
		byKind[kind] = append(byKind[kind], o)
	}
	for _, o := range append(byKind["StatefulSet"], byKind["Deployment"]...) {
		checkWorkload(scenario, o, byKind)
	}
	for _, o := range byKind["Service"] {
		checkService(scenario, o, byKind)
	}
	for _, kind := range []string{"ServiceMonitor", "PodDisruptionBudget"} {
		for _, o := range byKind[kind] {
			if len(matchingPods(labels(o, "spec", "selector", "matchLabels"), byKind)) == 0 {
				fail("%s: %s selects no pod", scenario, kind)
			}
		}
	}
	for _, o := range byKind["ServiceMonitor"] {
		var chosen []string
		for _, s := range byKind["Service"] {
			if selectsService(o, s) {
				chosen = append(chosen, str(s, "metadata", "name"))
			}
		}
		if len(chosen) != 1 || chosen[0] != "queue-codeq" {
			fail("%s: the ServiceMonitor selects the Services %v, want codeQ's regular one only", scenario, chosen)
		}
	}
	for _, o := range byKind["PrometheusRule"] {
		for _, group := range list(o, "spec", "groups") {
			for _, rule := range list(group.(object), "rules") {
				r := rule.(object)
				if str(r, "alert") == "" || str(r, "expr") == "" {
					fail("%s: a rule without alert or expr: %v", scenario, r)
				}
			}
		}
	}
	for _, o := range byKind["ConfigMap"] {
		var config object
		must(yaml.Unmarshal([]byte(str(o, "data", "codeq.yaml")), &config))
		for _, key := range []string{"host", "port", "dataDir", "storage"} {
			if config[key] == nil {
				fail("%s: codeq.yaml has no %s", scenario, key)
			}
		}
	}
}

// selectsService tells whether a ServiceMonitor's selector (matchLabels and
// matchExpressions) matches a Service's labels.
func selectsService(monitor, service object) bool {
	have := labels(service, "metadata", "labels")
	for k, v := range labels(monitor, "spec", "selector", "matchLabels") {
		if have[k] != v {
			return false
		}
	}
	for _, e := range list(monitor, "spec", "selector", "matchExpressions") {
		expression := e.(object)
		value, present := have[str(expression, "key")]
		listed := false
		for _, v := range list(expression, "values") {
			listed = listed || (present && fmt.Sprint(v) == value)
		}
		switch str(expression, "operator") {
		case "In":
			if !listed {
				return false
			}
		case "NotIn":
			if listed {
				return false
			}
		case "Exists":
			if !present {
				return false
			}
		case "DoesNotExist":
			if present {
				return false
			}
		default:
			fail("unknown selector operator %q", str(expression, "operator"))
		}
	}
	return true
}

func checkWorkload(scenario string, o object, byKind map[string][]object) {
	where := fmt.Sprintf("%s: %s %s", scenario, str(o, "kind"), str(o, "metadata", "name"))
	selector := labels(o, "spec", "selector", "matchLabels")
	podLabels := labels(o, "spec", "template", "metadata", "labels")
	if len(selector) == 0 || !subset(selector, podLabels) {
		fail("%s: selector %v does not match the pod labels %v", where, selector, podLabels)
	}
	if str(o, "kind") == "StatefulSet" && !named(byKind["Service"], str(o, "spec", "serviceName")) {
		fail("%s: serviceName %q is not a rendered Service", where, str(o, "spec", "serviceName"))
	}
	volumes := map[string]bool{}
	for _, v := range list(o, "spec", "template", "spec", "volumes") {
		volume := v.(object)
		volumes[str(volume, "name")] = true
		if name := str(volume, "configMap", "name"); name != "" && !named(byKind["ConfigMap"], name) {
			fail("%s: volume of ConfigMap %q, not rendered", where, name)
		}
	}
	for _, c := range list(o, "spec", "volumeClaimTemplates") {
		claim := c.(object)
		volumes[str(claim, "metadata", "name")] = true
		if str(claim, "spec", "resources", "requests", "storage") == "" {
			fail("%s: a volume claim without a size", where)
		}
	}
	containers := list(o, "spec", "template", "spec", "containers")
	if len(containers) == 0 {
		fail("%s: no containers", where)
	}
	for _, c := range containers {
		container := c.(object)
		if str(container, "name") == "" || str(container, "image") == "" {
			fail("%s: a container without name or image", where)
		}
		for _, m := range list(container, "volumeMounts") {
			if !volumes[str(m.(object), "name")] {
				fail("%s: mount of unknown volume %q", where, str(m.(object), "name"))
			}
		}
		for _, e := range list(container, "env") {
			ref := str(e.(object), "valueFrom", "secretKeyRef", "name")
			if ref != "" && ref != "codeq-tokens" && !named(byKind["Secret"], ref) {
				fail("%s: env from Secret %q, not rendered", where, ref)
			}
		}
		if str(container, "name") == "codeq" {
			if str(container, "livenessProbe", "httpGet", "path") != "/healthz" ||
				str(container, "readinessProbe", "httpGet", "path") != "/readyz" {
				fail("%s: probes must be /healthz (liveness) and /readyz (readiness)", where)
			}
			if len(labels(container, "resources", "requests")) == 0 {
				fail("%s: no resource requests", where)
			}
		}
	}
}

func checkService(scenario string, o object, byKind map[string][]object) {
	where := fmt.Sprintf("%s: Service %s", scenario, str(o, "metadata", "name"))
	pods := matchingPods(labels(o, "spec", "selector"), byKind)
	if len(pods) == 0 {
		fail("%s: selects no pod", where)
	}
	for _, p := range list(o, "spec", "ports") {
		target := str(p.(object), "targetPort")
		found := false
		for _, pod := range pods {
			for _, c := range list(pod, "spec", "containers") {
				for _, port := range list(c.(object), "ports") {
					found = found || str(port.(object), "name") == target
				}
			}
		}
		if !found {
			fail("%s: targetPort %q is no named container port", where, target)
		}
	}
}

// matchingPods returns the pod templates whose labels include selector.
func matchingPods(selector map[string]string, byKind map[string][]object) []object {
	var pods []object
	for _, o := range append(byKind["StatefulSet"], byKind["Deployment"]...) {
		if len(selector) > 0 && subset(selector, labels(o, "spec", "template", "metadata", "labels")) {
			pods = append(pods, get(o, "spec", "template").(object))
		}
	}
	return pods
}

func subset(a, b map[string]string) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func named(objects []object, name string) bool {
	for _, o := range objects {
		if str(o, "metadata", "name") == name {
			return true
		}
	}
	return false
}

func get(o object, path ...string) interface{} {
	var v interface{} = o
	for _, key := range path {
		m, ok := v.(object)
		if !ok {
			return nil
		}
		v = m[key]
	}
	return v
}

func str(o object, path ...string) string {
	v := get(o, path...)
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func list(o object, path ...string) []interface{} {
	l, _ := get(o, path...).([]interface{})
	return l
}

func labels(o object, path ...string) map[string]string {
	out := map[string]string{}
	m, _ := get(o, path...).(object)
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return out
}
