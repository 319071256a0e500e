package cluster

import (
	"fmt"
	"os"
	"strings"
)

// Cell is one containerd version and CRI pull path of the agent's test matrix.
type Cell struct {
	// Version is a containerd release ("v2.4.2"); "" is the default build.
	Version string
	// LocalPull: the CRI pulls with the local client (2.0, or use_local_image_pull on
	// 2.1 and later) rather than through the transfer service.
	LocalPull bool
}

// DefaultContainerd is the containerd release hack/components.sh builds by default.
const DefaultContainerd = "v2.4.2"

// Path names the CRI's pull path.
func (c Cell) Path() string {
	if c.LocalPull {
		return "local"
	}
	return "transfer"
}

func (c Cell) String() string {
	v := c.Version
	if v == "" {
		v = DefaultContainerd
	}
	return v + "/" + c.Path()
}

// Default reports whether c is the default cell: the default build, transfer service.
func (c Cell) Default() bool {
	return (c.Version == "" || c.Version == DefaultContainerd) && !c.LocalPull
}

// Options sets the cell's containerd in opts.
func (c Cell) Options(opts Options) Options {
	if c.Version != DefaultContainerd {
		opts.ContainerdVersion = c.Version
	}
	opts.LocalPull = c.LocalPull
	return opts
}

// MatrixCells are every cell `make test-matrix` runs: the versions clusters run today,
// each in the pull paths it has (2.0 has no transfer-service pull in the CRI).
var MatrixCells = []Cell{
	{Version: DefaultContainerd},
	{Version: DefaultContainerd, LocalPull: true},
	{Version: "v2.2.9"},
	{Version: "v2.2.9", LocalPull: true},
	{Version: "v2.0.14", LocalPull: true},
}

// TestCells are the cells `make test` runs: the default, its local pull path, and 2.0.
var TestCells = []Cell{MatrixCells[0], MatrixCells[1], MatrixCells[4]}

// CellsEnv selects the cells the real containerd tests run over.
const CellsEnv = "PULLTRACE_CONTAINERD_CELLS"

// CellsFromEnv reads CellsEnv: "test" (TestCells), "matrix" (MatrixCells), or a comma
// list like "v2.4.2/transfer,v2.0.14/local". Unset means the default cell alone, so a
// plain `go test` of one package stays quick.
func CellsFromEnv() ([]Cell, error) {
	v := strings.TrimSpace(os.Getenv(CellsEnv))
	switch v {
	case "":
		return MatrixCells[:1], nil
	case "test":
		return TestCells, nil
	case "matrix", "all":
		return MatrixCells, nil
	}
	var out []Cell
	for _, s := range strings.Split(v, ",") {
		ver, path, ok := strings.Cut(strings.TrimSpace(s), "/")
		if !ok || !strings.HasPrefix(ver, "v") || (path != "transfer" && path != "local") {
			return nil, fmt.Errorf("%s: %q is not VERSION/transfer or VERSION/local", CellsEnv, s)
		}
		if path == "transfer" && strings.HasPrefix(ver, "v2.0.") {
			return nil, fmt.Errorf("%s: %q: containerd 2.0 has no transfer-service pull in the CRI", CellsEnv, s)
		}
		out = append(out, Cell{Version: ver, LocalPull: path == "local"})
	}
	return out, nil
}
