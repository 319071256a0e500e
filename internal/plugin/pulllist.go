package plugin

import (
	"strconv"
	"time"

	"github.com/d44b/pulltrace/internal/plugin/output"
	"github.com/d44b/pulltrace/pkg/api"
)

// Kinds of get's typed output (apiVersion output.APIVersion).
const (
	KindPull     = "Pull"
	KindPullList = "PullList"
)

// PullObject is one item of `get -o json|yaml`: a v1 Pull (its fields inline) with the
// apiVersion, kind and metadata.name (the pull's id) kubectl's printers expect.
type PullObject struct {
	output.TypeMeta
	Metadata output.ObjectMeta `json:"metadata"`
	api.Pull
}

// PullObjectList is what `get -o json|yaml` prints: {"apiVersion": "pulltrace.d44b.io/v1",
// "kind": "PullList", "items": [Pull objects]}.
type PullObjectList struct {
	output.TypeMeta
	Items []PullObject `json:"items"`
}

// NewPullObjectList wraps pulls as the typed list.
func NewPullObjectList(pulls []api.Pull) *PullObjectList {
	l := &PullObjectList{TypeMeta: output.TypeMeta{APIVersion: output.APIVersion, Kind: KindPullList}, Items: make([]PullObject, len(pulls))}
	for i := range pulls {
		l.Items[i] = PullObject{
			TypeMeta: output.TypeMeta{APIVersion: output.APIVersion, Kind: KindPull},
			Metadata: output.ObjectMeta{Name: pulls[i].ID},
			Pull:     pulls[i],
		}
	}
	return l
}

// pullColumns are get's table columns; LAYERS and DIGEST are -o wide's.
var pullColumns = []output.Column{
	{Name: "IMAGE", Description: "The image reference"},
	{Name: "NODE", Description: "The node pulling it"},
	{Name: "PODS", Description: "Pods waiting for the image"},
	{Name: "STATE", Description: "active, stalled, queued, completed, cached or failed"},
	{Name: "PROGRESS", Description: "Downloaded share of the image's size"},
	{Name: "SIZE"},
	{Name: "SPEED"},
	{Name: "ETA"},
	{Name: "AGE", Description: "Time since the pull started"},
	{Name: "LAYERS", Wide: true, Description: "Layers done of all layers"},
	{Name: "DIGEST", Wide: true, Description: "Manifest digest (and index digest)"},
}

// TableHeader is the header row; wide adds LAYERS and DIGEST.
func TableHeader(wide bool) []string {
	var h []string
	for _, c := range pullColumns {
		if wide || !c.Wide {
			h = append(h, c.Name)
		}
	}
	return h
}

// pullTable is the table of pulls; wide shows every pod and a failure's error.
func pullTable(pulls []api.Pull, wide bool, now time.Time) output.Table {
	return output.Table{Columns: pullColumns, Cells: func(i int) []any {
		row := TableRow(&pulls[i], wide, now)
		if !wide {
			row = append(row, pullWideCells(&pulls[i])...)
		}
		cells := make([]any, len(row))
		for j := range row {
			cells[j] = row[j]
		}
		return cells
	}}
}

// TableRow is one pull as table cells.
func TableRow(p *api.Pull, wide bool, now time.Time) []string {
	pods := 2
	if wide {
		pods = 0
	}
	row := []string{imageOf(p), p.NodeName, formatPods(p.Pods, pods), string(p.State), formatProgress(p, 10),
		formatSize(p), formatPullSpeed(p), formatETA(p), formatAge(p.StartedAt, now)}
	if wide {
		row = append(row, pullWideCells(p)...)
	}
	if p.State == api.PullFailed && p.Error != "" && wide {
		row[3] = "failed: " + p.Error
	}
	return row
}

func pullWideCells(p *api.Pull) []string {
	layers := "-"
	if p.LayerCount > 0 || len(p.Layers) > 0 {
		layers = strconv.Itoa(p.LayersDone) + "/" + strconv.Itoa(max(p.LayerCount, len(p.Layers)))
	}
	digest := p.ManifestDigest
	if p.IndexDigest != "" {
		digest += " (index " + p.IndexDigest + ")"
	}
	if digest == "" {
		digest = "<none>"
	}
	return []string{layers, digest}
}
