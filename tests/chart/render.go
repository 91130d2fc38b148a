// render: renders a Helm chart's templates the way Helm does, for tests (Helm itself is not
// installable here). Go's text/template with the sprig function library (Helm's engine and
// functions) plus Helm's own include, tpl, required, toYaml, fromYaml, toJson and lookup, and
// .Files.Get.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run render.go CHART [VALUES.yaml ...]
//
// Values files are deep-merged over CHART/values.yaml in order. Output: every rendered
// template as YAML documents, each preceded by "# Source: <path>"; NOTES.txt last.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

func readYaml(path string) map[string]interface{} {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%s: %v", path, err)
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		fail("%s: %v", path, err)
	}
	return out
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "render: "+format+"\n", args...)
	os.Exit(1)
}

func merge(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func toYaml(v interface{}) string {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// chartFiles is Helm's .Files: the chart's non-template files by path relative to the chart.
type chartFiles struct{ dir string }

// Get returns a file's content, or "" when it does not exist (as Helm does).
func (f chartFiles) Get(name string) string {
	clean := filepath.Clean(name)
	if filepath.IsAbs(clean) || strings.HasPrefix(clean, "..") || strings.HasPrefix(clean, "templates/") {
		return ""
	}
	data, err := os.ReadFile(filepath.Join(f.dir, clean))
	if err != nil {
		return ""
	}
	return string(data)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: render CHART [VALUES.yaml ...]")
	}
	chartDir := os.Args[1]
	chart := readYaml(filepath.Join(chartDir, "Chart.yaml"))
	values := readYaml(filepath.Join(chartDir, "values.yaml"))
	for _, f := range os.Args[2:] {
		values = merge(values, readYaml(f))
	}
	data := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{"Name": "mz", "Namespace": "memzone", "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1},
		"Chart": map[string]interface{}{"Name": chart["name"], "Version": chart["version"],
			"AppVersion": chart["appVersion"]},
		"Capabilities": map[string]interface{}{"KubeVersion": map[string]interface{}{"Version": "v1.31.0"}},
		"Files":        chartFiles{chartDir},
	}

	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	funcs["include"] = func(name string, v interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, v)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, v interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, v)
		return buf.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		if l, ok := v.([]interface{}); ok && len(l) == 0 {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", fmt.Errorf("%s", msg) }
	funcs["toYaml"] = toYaml
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		out := map[string]interface{}{}
		_ = yaml.Unmarshal([]byte(s), &out)
		return out
	}
	funcs["toJson"] = func(v interface{}) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	funcs["lookup"] = func(...interface{}) map[string]interface{} { return map[string]interface{}{} }
	root.Funcs(funcs).Option("missingkey=zero")

	var files []string
	filepath.Walk(filepath.Join(chartDir, "templates"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			fail("%v", err)
		}
		rel, _ := filepath.Rel(chartDir, f)
		if _, err := root.New(rel).Parse(string(text)); err != nil {
			fail("%s: %v", rel, err)
		}
	}
	var notes string
	for _, f := range files {
		rel, _ := filepath.Rel(chartDir, f)
		base := filepath.Base(rel)
		if strings.HasPrefix(base, "_") {
			continue
		}
		scope := map[string]interface{}{}
		for k, v := range data {
			scope[k] = v
		}
		scope["Template"] = map[string]interface{}{"Name": rel, "BasePath": filepath.Join(filepath.Base(chartDir), "templates")}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, rel, scope); err != nil {
			fail("%s: %v", rel, err)
		}
		if base == "NOTES.txt" {
			notes = buf.String()
			continue
		}
		out := strings.TrimSpace(buf.String())
		if out == "" {
			continue
		}
		fmt.Printf("---\n# Source: %s\n%s\n", rel, out)
	}
	fmt.Printf("---\n# NOTES.txt\n")
	for _, line := range strings.Split(notes, "\n") {
		fmt.Printf("# %s\n", line)
	}
}
