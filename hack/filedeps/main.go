// Command filedeps checks that the files of a Go package depend on each
// other in layers: a file uses names (types, functions, methods, constants,
// variables) defined in other files of its package only below it, so the
// package reads from the top down with no file reaching back up. It prints
// each file's dependencies and fails, naming the names involved, when two
// files reach each other (directly or through others).
//
//	go run ./hack/filedeps ./pkg/shim   (from the module root; make lint runs it)
//
// It is a module of its own, so the shim does not depend on x/tools.
package main

import (
	"fmt"
	"go/ast"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/tools/go/packages"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: filedeps PACKAGE...")
		os.Exit(2)
	}
	failed := false
	for _, pattern := range os.Args[1:] {
		if !check(pattern) {
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// check reports whether the package's files form layers.
func check(pattern string) bool {
	cfg := &packages.Config{Mode: packages.NeedName | packages.NeedTypes | packages.NeedTypesInfo | packages.NeedSyntax | packages.NeedFiles}
	pkgs, err := packages.Load(cfg, pattern)
	if err != nil || len(pkgs) != 1 || len(pkgs[0].Errors) > 0 {
		fmt.Fprintf(os.Stderr, "filedeps: loading %s: %v %v\n", pattern, err, pkgErrors(pkgs))
		return false
	}
	p := pkgs[0]
	uses := map[string]map[string]map[string]bool{} // file -> file -> names
	file := func(pos token.Pos) string { return filepath.Base(p.Fset.Position(pos).Filename) }
	for _, f := range p.Syntax {
		from := file(f.Pos())
		ast.Inspect(f, func(n ast.Node) bool {
			id, ok := n.(*ast.Ident)
			if !ok {
				return true
			}
			obj := p.TypesInfo.Uses[id]
			if obj == nil || obj.Pkg() != p.Types || !obj.Pos().IsValid() {
				return true
			}
			// Package-level names and methods only (not locals, fields of
			// locals' types count through their type's file).
			if obj.Parent() != nil && obj.Parent() != p.Types.Scope() {
				return true
			}
			to := file(obj.Pos())
			if to == from {
				return true
			}
			if uses[from] == nil {
				uses[from] = map[string]map[string]bool{}
			}
			if uses[from][to] == nil {
				uses[from][to] = map[string]bool{}
			}
			uses[from][to][id.Name] = true
			return true
		})
	}
	cycles := findCycles(uses)
	fmt.Printf("%s: %d files\n", p.PkgPath, len(p.Syntax))
	for _, from := range sortedKeys(uses) {
		fmt.Printf("  %s -> %s\n", from, strings.Join(sortedKeys(uses[from]), " "))
	}
	for _, c := range cycles {
		fmt.Fprintf(os.Stderr, "filedeps: %s: files reach each other: %s\n", p.PkgPath, c)
	}
	return len(cycles) == 0
}

// findCycles returns, for every pair of files that reach each other, the
// path between them and back, with the names used on each step.
func findCycles(uses map[string]map[string]map[string]bool) []string {
	var out []string
	seen := map[string]bool{}
	for _, a := range sortedKeys(uses) {
		for _, b := range sortedKeys(uses[a]) {
			back := path(uses, b, a)
			if back == nil {
				continue
			}
			steps := append([]string{a}, back...)
			key := strings.Join(sortedCopy(steps[:len(steps)-1]), ",")
			if seen[key] {
				continue
			}
			seen[key] = true
			var desc []string
			for i := 0; i+1 < len(steps); i++ {
				desc = append(desc, fmt.Sprintf("%s -[%s]-> %s", steps[i], strings.Join(sortedKeys(uses[steps[i]][steps[i+1]]), " "), steps[i+1]))
			}
			out = append(out, strings.Join(desc, ", "))
		}
	}
	return out
}

// path returns a path of files from a to b, a and b included, or nil.
func path(uses map[string]map[string]map[string]bool, a, b string) []string {
	prev := map[string]string{a: ""}
	queue := []string{a}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if n == b {
			var p []string
			for ; n != ""; n = prev[n] {
				p = append([]string{n}, p...)
			}
			return p
		}
		for _, m := range sortedKeys(uses[n]) {
			if _, ok := prev[m]; !ok {
				prev[m] = n
				queue = append(queue, m)
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

func pkgErrors(pkgs []*packages.Package) []packages.Error {
	var errs []packages.Error
	for _, p := range pkgs {
		errs = append(errs, p.Errors...)
	}
	return errs
}
