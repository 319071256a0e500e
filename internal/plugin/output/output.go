// Package output prints the plugin's lists the way kubectl prints resources: a table
// (cli-runtime's table printer over a metav1.Table, -o wide adding columns), and through
// cli-runtime's PrintFlags json, yaml, name, jsonpath, go-template; plus custom-columns,
// --no-headers and --sort-by.
//
// The typed output is a list in the Kubernetes shape: apiVersion, kind and items, each item
// with apiVersion, kind and metadata.name besides its own fields, so that
// `-o jsonpath='{.items[*].metadata.name}'` and `-o name` work as they do in kubectl.
package output

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/client-go/util/jsonpath"
)

// APIVersion is the apiVersion of every typed object the plugin prints. It is not served by
// any API server: it names the shape of the plugin's output.
const APIVersion = "pulltrace.d44b.io/v1"

// TypeMeta is an object's apiVersion and kind.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// ObjectMeta names an item of a list.
type ObjectMeta struct {
	Name string `json:"name"`
}

// ErrUsage marks a bad output flag; callers turn it into their usage error.
var ErrUsage = errors.New("bad output flags")

// Column is one column of a table; Wide columns show with -o wide only.
type Column struct {
	Name        string
	Description string
	Wide        bool
}

// Table is what a table shows of a list: its columns, and the cells of item i (in the order
// of the list's items), one per column, wide columns included.
type Table struct {
	Columns []Column
	Cells   func(i int) []any
}

// Flags are the output flags of a command that lists things.
type Flags struct {
	print     *genericclioptions.PrintFlags
	NoHeaders bool
	SortBy    string
}

// NewFlags returns the flags with the table as default output.
func NewFlags() *Flags {
	return &Flags{print: genericclioptions.NewPrintFlags("")}
}

// AddFlags adds kubectl's -o, --template, --allow-missing-template-keys and
// --show-managed-fields, and --no-headers and --sort-by to cmd.
func (f *Flags) AddFlags(cmd *cobra.Command) {
	f.print.AddFlags(cmd)
	fs := cmd.Flags()
	fs.Lookup("output").Usage = "Output format: one of (" + strings.Join(f.Formats(), ", ") + "); custom-columns=HEADER:JSONPATH,..."
	fs.BoolVar(&f.NoHeaders, "no-headers", false, "Don't print headers (table and custom-columns output)")
	fs.StringVar(&f.SortBy, "sort-by", "", "Sort the items by this JSONPath field of each item, e.g. '{.startedAt}' or .state")
}

// Formats are the accepted -o values.
func (f *Flags) Formats() []string {
	return append([]string{"wide", "custom-columns"}, f.print.AllowedFormats()...)
}

// Format is the -o value.
func (f *Flags) Format() string { return *f.print.OutputFormat }

// SetFormat sets -o (for tests and callers with their own defaults).
func (f *Flags) SetFormat(s string) { *f.print.OutputFormat = s }

// IsTable reports whether the output is the (possibly wide) table.
func (f *Flags) IsTable() bool {
	o := f.Format()
	return o == "wide" || o == "" && *f.print.TemplatePrinterFlags.TemplateArgument == ""
}

// Validate checks the flags without printing anything.
func (f *Flags) Validate() error {
	if f.SortBy != "" {
		if _, err := parsePath(f.SortBy); err != nil {
			return fmt.Errorf("%w: --sort-by %q: %v", ErrUsage, f.SortBy, err)
		}
	}
	if f.IsTable() {
		return nil
	}
	if spec, ok := strings.CutPrefix(f.Format(), "custom-columns="); ok {
		_, err := parseColumns(spec)
		return err
	}
	if f.Format() == "custom-columns" {
		return fmt.Errorf("%w: -o custom-columns needs a spec: -o custom-columns=NAME:.metadata.name,STATE:.state", ErrUsage)
	}
	if _, err := f.print.ToPrinter(); err != nil {
		if genericclioptions.IsNoCompatiblePrinterError(err) {
			return fmt.Errorf("%w: unknown output format %q: want one of %s", ErrUsage, f.Format(), strings.Join(f.Formats(), ", "))
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return nil
}

// Printer prints lists, and in watch mode their items as they change.
type Printer struct {
	flags   *Flags
	w       io.Writer
	table   bool
	headers bool // a table's header is still to be printed
}

// NewPrinter checks the flags and returns a printer writing to w.
func (f *Flags) NewPrinter(w io.Writer) (*Printer, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &Printer{flags: f, w: w, table: f.IsTable(), headers: !f.NoHeaders}, nil
}

// PrintList prints list (a JSON-encodable typed list: apiVersion, kind, items) and, for the
// table, its cells from t.
func (p *Printer) PrintList(list any, t Table) error {
	ul, err := toUnstructured(list)
	if err != nil {
		return err
	}
	order, err := p.order(ul.Items)
	if err != nil {
		return err
	}
	items := make([]unstructured.Unstructured, len(order))
	for i, j := range order {
		items[i] = ul.Items[j]
	}
	ul.Items = items
	return p.print(ul, ul.Items, order, t)
}

// PrintItems prints the items of list one by one, as kubectl get -w prints a change: a
// table row (the header before the first), or each item as an object of its own.
func (p *Printer) PrintItems(list any, t Table) error {
	ul, err := toUnstructured(list)
	if err != nil {
		return err
	}
	for i := range ul.Items {
		var err error
		if p.table {
			err = p.print(nil, ul.Items[i:i+1], []int{i}, t)
		} else {
			err = p.print(&ul.Items[i], ul.Items[i:i+1], []int{i}, t)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// print writes obj (the list, or one item) in the chosen format; items and order (the
// indices of items in the original list) feed the table and custom columns.
func (p *Printer) print(obj runtime.Object, items []unstructured.Unstructured, order []int, t Table) error {
	format := p.flags.Format()
	switch {
	case p.table:
		return p.printTable(order, t)
	case strings.HasPrefix(format, "custom-columns="):
		cols, err := parseColumns(strings.TrimPrefix(format, "custom-columns="))
		if err != nil {
			return err
		}
		return p.printColumns(items, cols)
	}
	pr, err := p.flags.print.ToPrinter()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if err := pr.PrintObj(obj, p.w); err != nil {
		return fmt.Errorf("print: %w", err)
	}
	return nil
}

func (p *Printer) printTable(order []int, t Table) error {
	tbl := &metav1.Table{}
	for _, c := range t.Columns {
		def := metav1.TableColumnDefinition{Name: c.Name, Type: "string", Description: c.Description}
		if c.Wide {
			def.Priority = 1
		}
		tbl.ColumnDefinitions = append(tbl.ColumnDefinitions, def)
	}
	for _, i := range order {
		tbl.Rows = append(tbl.Rows, metav1.TableRow{Cells: t.Cells(i)})
	}
	pr := printers.NewTablePrinter(printers.PrintOptions{NoHeaders: !p.headers, Wide: p.flags.Format() == "wide"})
	if err := pr.PrintObj(tbl, p.w); err != nil {
		return fmt.Errorf("print table: %w", err)
	}
	p.headers = false
	return nil
}

type column struct {
	header string
	path   *jsonpath.JSONPath
}

func parseColumns(spec string) ([]column, error) {
	if spec == "" {
		return nil, fmt.Errorf("%w: custom-columns format specified but no custom columns given", ErrUsage)
	}
	var cols []column
	for _, part := range strings.Split(spec, ",") {
		header, expr, ok := strings.Cut(part, ":")
		if !ok || header == "" || expr == "" {
			return nil, fmt.Errorf("%w: custom-columns: %q is not HEADER:JSONPATH", ErrUsage, part)
		}
		jp, err := parsePath(expr)
		if err != nil {
			return nil, fmt.Errorf("%w: custom-columns %q: %v", ErrUsage, part, err)
		}
		cols = append(cols, column{header: header, path: jp})
	}
	return cols, nil
}

func (p *Printer) printColumns(items []unstructured.Unstructured, cols []column) error {
	tw := printers.GetNewTabWriter(p.w)
	if p.headers {
		h := make([]string, len(cols))
		for i, c := range cols {
			h[i] = c.header
		}
		fmt.Fprintln(tw, strings.Join(h, "\t"))
		p.headers = false
	}
	for i := range items {
		cells := make([]string, len(cols))
		for j, c := range cols {
			vals, err := c.path.FindResults(items[i].Object)
			cells[j] = "<none>"
			if err != nil || len(vals) == 0 || len(vals[0]) == 0 {
				continue
			}
			var s []string
			for _, v := range vals[0] {
				s = append(s, fmt.Sprint(v.Interface()))
			}
			cells[j] = strings.Join(s, ",")
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// parsePath accepts kubectl's relaxed JSONPath forms: '{.a.b}', '.a.b' and 'a.b'.
func parsePath(expr string) (*jsonpath.JSONPath, error) {
	expr = strings.TrimSpace(expr)
	if !strings.HasPrefix(expr, "{") {
		if !strings.HasPrefix(expr, ".") {
			expr = "." + expr
		}
		expr = "{" + expr + "}"
	}
	jp := jsonpath.New("column").AllowMissingKeys(true)
	if err := jp.Parse(expr); err != nil {
		return nil, err
	}
	return jp, nil
}

// order is the items' print order: as listed, or stably sorted by --sort-by (items that
// lack the field first, numbers by value, everything else as text).
func (p *Printer) order(items []unstructured.Unstructured) ([]int, error) {
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	if p.flags.SortBy == "" {
		return idx, nil
	}
	jp, err := parsePath(p.flags.SortBy)
	if err != nil {
		return nil, fmt.Errorf("%w: --sort-by: %v", ErrUsage, err)
	}
	keys := make([]any, len(items))
	for i := range items {
		vals, err := jp.FindResults(items[i].Object)
		if err == nil && len(vals) > 0 && len(vals[0]) > 0 {
			keys[i] = vals[0][0].Interface()
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return less(keys[idx[a]], keys[idx[b]]) })
	return idx, nil
}

func less(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b != nil
	}
	fa, aok := number(a)
	fb, bok := number(b)
	if aok && bok {
		return fa < fb
	}
	return fmt.Sprint(a) < fmt.Sprint(b)
}

func number(v any) (float64, bool) {
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(r.Int()), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return float64(r.Uint()), true
	case reflect.Float32, reflect.Float64:
		return r.Float(), true
	}
	return 0, false
}

func toUnstructured(list any) (*unstructured.UnstructuredList, error) {
	b, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("encode list: %w", err)
	}
	ul := &unstructured.UnstructuredList{}
	if err := ul.UnmarshalJSON(b); err != nil {
		return nil, fmt.Errorf("decode list: %w", err)
	}
	return ul, nil
}
