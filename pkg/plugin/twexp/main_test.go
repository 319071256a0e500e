package twexp
import (
	"os"
	"testing"
	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
)
func TestX(t *testing.T) {
	table := tablewriter.NewTable(os.Stdout,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders: tw.BorderNone,
			Symbols: tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{Separators: tw.SeparatorsNone, Lines: tw.LinesNone},
		})),
		tablewriter.WithConfig(tablewriter.Config{
			Header: tw.CellConfig{Formatting: tw.CellFormatting{AutoFormat: tw.Off}, Alignment: tw.CellAlignment{Global: tw.AlignLeft}, Padding: tw.CellPadding{Global: tw.Padding{Left: "", Right: "   "}}},
			Row: tw.CellConfig{Formatting: tw.CellFormatting{AutoWrap: tw.WrapNone}, Alignment: tw.CellAlignment{Global: tw.AlignLeft}, Padding: tw.CellPadding{Global: tw.Padding{Left: "", Right: "   "}}},
		}),
	)
	table.Header([]string{"IMAGE", "NODE", "PROGRESS"})
	table.Append([]string{"127.0.0.1:5000/pulltrace/x:v1", "node-1", "[=====>    ] 45%"})
	table.Append([]string{"docker.io/library/nginx:latest", "node-22", "[==========] 100%"})
	table.Render()
}
