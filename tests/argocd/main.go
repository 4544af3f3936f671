// Command argocd-health-check runs every Argo CD health script under a resource-customizations
// directory (<group>/<Kind>/health.lua with health_test.yaml and testdata/) the way Argo CD runs
// it: gopher-lua, a fresh state per evaluation, the object as the global `obj`, a one-second
// limit, and the returned table converted with gopher-json. Each case runs twice: with only the
// libraries Argo CD opens by default (package, base, table, a reduced os) and with all of Lua's
// libraries open (resource.customizations.useOpenLibs), because a script that calls string.*
// passes the second and fails in production.
//
// Usage: argocd-health-check [-crds FILE] DIR
// With -crds, every kind defined in FILE must have a health check in DIR.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	lua "github.com/yuin/gopher-lua"
	"gopkg.in/yaml.v3"
	luajson "layeh.com/gopher-json"
)

// Argo CD's health statuses; anything else it reports as Unknown.
var validStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

type healthStatus struct {
	Status  string `json:"status" yaml:"status"`
	Message string `json:"message" yaml:"message"`
}

type testFile struct {
	Tests []struct {
		InputPath    string       `yaml:"inputPath"`
		HealthStatus healthStatus `yaml:"healthStatus"`
	} `yaml:"tests"`
}

func main() {
	crds := flag.String("crds", "", "a CRD manifest whose every kind needs a health check")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health-check [-crds FILE] DIR")
		os.Exit(2)
	}
	passed, failed, err := checkAll(flag.Arg(0), *crds)
	if err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health-check:", err)
		os.Exit(1)
	}
	fmt.Printf("argocd-health: %d passed, %d failed\n", passed, failed)
	if failed > 0 || passed == 0 {
		os.Exit(1)
	}
}

func checkAll(root, crds string) (passed, failed int, err error) {
	scripts, err := filepath.Glob(filepath.Join(root, "*", "*", "health.lua"))
	if err != nil {
		return 0, 0, err
	}
	if len(scripts) == 0 {
		return 0, 0, fmt.Errorf("no <group>/<Kind>/health.lua under %s", root)
	}
	sort.Strings(scripts)
	found := map[string]bool{}
	for _, script := range scripts {
		dir := filepath.Dir(script)
		found[filepath.Base(filepath.Dir(dir))+"/"+filepath.Base(dir)] = true
		p, f, err := checkKind(dir)
		if err != nil {
			return passed, failed, fmt.Errorf("%s: %w", dir, err)
		}
		passed += p
		failed += f
	}
	if crds != "" {
		kinds, err := crdKinds(crds)
		if err != nil {
			return passed, failed, err
		}
		for _, kind := range kinds {
			if !found[kind] {
				fmt.Printf("FAIL %s: no health check at %s\n", kind, filepath.Join(root, kind, "health.lua"))
				failed++
			}
		}
	}
	return passed, failed, nil
}

func checkKind(dir string) (passed, failed int, err error) {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		return 0, 0, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		return 0, 0, err
	}
	var tests testFile
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		return 0, 0, fmt.Errorf("health_test.yaml: %w", err)
	}
	if len(tests.Tests) == 0 {
		return 0, 0, errors.New("health_test.yaml has no tests")
	}
	for _, test := range tests.Tests {
		input, err := os.ReadFile(filepath.Join(dir, test.InputPath))
		if err != nil {
			return passed, failed, err
		}
		var obj map[string]any
		if err := yaml.Unmarshal(input, &obj); err != nil {
			return passed, failed, fmt.Errorf("%s: %w", test.InputPath, err)
		}
		for _, openLibs := range []bool{false, true} {
			mode := "default libraries"
			if openLibs {
				mode = "useOpenLibs"
			}
			got, err := evaluate(string(script), obj, openLibs)
			switch {
			case err != nil:
				fmt.Printf("FAIL %s %s (%s): %v\n", dir, test.InputPath, mode, err)
				failed++
			case got != test.HealthStatus:
				fmt.Printf("FAIL %s %s (%s): got %+v, want %+v\n", dir, test.InputPath, mode, got, test.HealthStatus)
				failed++
			default:
				fmt.Printf("ok   %s %s (%s): %s %q\n", dir, test.InputPath, mode, got.Status, got.Message)
				passed++
			}
		}
	}
	return passed, failed, nil
}

// evaluate runs a health script as Argo CD's resource-customization VM does.
func evaluate(script string, obj map[string]any, openLibs bool) (healthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return healthStatus{}, err
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return healthStatus{}, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return healthStatus{}, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	encoded, err := luajson.Encode(table)
	if err != nil {
		return healthStatus{}, err
	}
	var result healthStatus
	if err := json.Unmarshal(encoded, &result); err != nil {
		return healthStatus{}, fmt.Errorf("the returned table is not a health status: %w", err)
	}
	if !validStatuses[result.Status] {
		return healthStatus{}, fmt.Errorf("status %q is not one Argo CD knows (it shows Unknown)", result.Status)
	}
	return result, nil
}

// toLua converts a decoded YAML/JSON value the way Argo CD hands objects to scripts.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []any:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case map[string]any:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	default:
		return lua.LString(fmt.Sprint(v))
	}
}

// The reduced os library Argo CD opens: time and clock only, nothing that touches the system.
var safeOsFunctions = map[string]lua.LGFunction{
	"time": func(l *lua.LState) int {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	},
	"clock": func(l *lua.LState) int {
		l.Push(lua.LNumber(float64(time.Now().UnixNano()) / 1e9))
		return 1
	},
}

func openSafeOs(l *lua.LState) int {
	module := l.RegisterModule(lua.OsLibName, safeOsFunctions)
	l.Push(module)
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOsFunctions))
	return 1
}

// crdKinds lists "<group>/<Kind>" of every CustomResourceDefinition in a manifest.
func crdKinds(path string) ([]string, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	decoder := yaml.NewDecoder(file)
	var kinds []string
	for {
		var crd struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Group string `yaml:"group"`
				Names struct {
					Kind string `yaml:"kind"`
				} `yaml:"names"`
			} `yaml:"spec"`
		}
		err := decoder.Decode(&crd)
		if errors.Is(err, io.EOF) {
			return kinds, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if crd.Kind == "CustomResourceDefinition" {
			kinds = append(kinds, crd.Spec.Group+"/"+crd.Spec.Names.Kind)
		}
	}
}
