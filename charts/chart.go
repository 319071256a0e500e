// Package charts carries the Pulltrace Helm chart inside the Go module, so that tests (and any
// tool of this module) render exactly the files in charts/pulltrace. The embed lives here
// because go:embed cannot reach files outside the embedding package's directory.
package charts

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/ignore"
)

// FS holds charts/pulltrace. The "all:" prefix is required: without it go:embed skips names
// starting with "_" or ".", and Helm would silently lose templates/_helpers.tpl and .helmignore.
//
//go:embed all:pulltrace
var FS embed.FS

// Root is the chart's directory inside FS.
const Root = "pulltrace"

// Load builds the chart from FS the way `helm` loads a chart directory: .helmignore rules
// (plus Helm's defaults) are applied and files are handed to Helm's loader with paths relative
// to the chart root.
func Load() (*chart.Chart, error) {
	return LoadFS(FS, Root)
}

func loadArchive(file string) (*chart.Chart, error) { return loader.LoadFile(file) }

// LoadFS loads the chart whose Chart.yaml sits in dir of fsys.
func LoadFS(fsys fs.FS, dir string) (*chart.Chart, error) {
	rules := ignore.Empty()
	if data, err := fs.ReadFile(fsys, path.Join(dir, ignore.HelmIgnore)); err == nil {
		r, err := ignore.Parse(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", ignore.HelmIgnore, err)
		}
		rules = r
	}
	rules.AddDefaults()

	var files []*loader.BufferedFile
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel := p[len(dir)+1:]
		info, err := d.Info()
		if err != nil {
			return err
		}
		if rules.Ignore(rel, info) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: rel, Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read chart %s: %w", dir, err)
	}
	return loader.LoadFiles(files)
}
