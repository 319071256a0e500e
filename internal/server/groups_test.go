package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/stream"
	"github.com/d44b/pulltrace/pkg/api"
	"github.com/d44b/pulltrace/pkg/sseclient"
)

func (h *harness) groups(query string) (int, api.GroupList) {
	h.t.Helper()
	resp, err := http.Get(h.http.URL + "/api/v1/groups" + query)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var l api.GroupList
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
			h.t.Fatal(err)
		}
	}
	return resp.StatusCode, l
}

// Reports from two nodes pulling one image make one group; it finishes when both pulls
// have, and shows the failure's reason. The group stream follows it with summaries.
func TestGroupsFromReports(t *testing.T) {
	h := newHarness(t, "", stream.Config{}, aggregate.Config{})
	onNode := func(node string, p api.Pull) api.Pull { p.NodeName = node; p.ID = node + "-" + p.ID; return p }
	a := onNode("node-1", pull("p", api.PullActive, layer(1, 100, 40, api.LayerDownloading)))
	b := onNode("node-2", pull("p", api.PullActive, layer(1, 100, 10, api.LayerDownloading)))
	for _, r := range []api.AgentReport{h.report("node-1", "a1", a), h.report("node-2", "a2", b)} {
		if code, body := h.post("", r); code != http.StatusOK {
			t.Fatalf("report: %d %s", code, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.http.URL+"/api/v1/groups/events?key=registry.local/team/app", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := sseclient.NewReader(resp.Body)
	snap, err := rd.Next()
	if err != nil || snap.Type != "snapshot" || !strings.Contains(snap.Data, `"active":2`) {
		t.Fatalf("snapshot %+v %v", snap, err)
	}
	code, l := h.groups("")
	if code != http.StatusOK || len(l.Groups) != 1 || l.Groups[0].Nodes != 2 || l.Groups[0].Counts.Active != 2 || l.Groups[0].Finished() {
		t.Fatalf("groups %d %+v", code, l)
	}

	h.advance(2 * time.Second)
	doneA := onNode("node-1", pull("p", api.PullCompleted, layer(1, 100, 100, api.LayerDone)))
	failB := onNode("node-2", pull("p", api.PullFailed, layer(1, 100, 10, api.LayerFailed)))
	failB.Error = "401 Unauthorized"
	h.post("", h.report("node-1", "a1", doneA))
	h.post("", h.report("node-2", "a2", failB))
	h.srv.Groups.Flush()
	ev, err := rd.Next()
	if err != nil {
		t.Fatal(err)
	}
	var ge api.GroupEvent
	if err := json.Unmarshal([]byte(ev.Data), &ge); err != nil || ge.Type != api.EventGroupUpdated {
		t.Fatalf("group event %s: %v", ev.Data, err)
	}
	g := ge.Group
	if !g.Finished() || g.Counts.Completed != 1 || g.Counts.Failed != 1 || len(g.Failures) != 1 ||
		g.Failures[0].Reason != "401 Unauthorized" || g.Failures[0].Nodes[0] != "node-2" {
		t.Fatalf("finished group %+v", g)
	}

	if code, _ := h.groups("?by=owner"); code != http.StatusBadRequest {
		t.Errorf("unknown grouping: %d", code)
	}
	if code, _ := h.groups("?slowest=-1"); code != http.StatusBadRequest {
		t.Errorf("negative slowest: %d", code)
	}
	if code, l := h.groups("?node=node-1&state=completed"); code != http.StatusOK || len(l.Groups) != 1 || l.Groups[0].Nodes != 1 {
		t.Errorf("filtered: %d %+v", code, l)
	}
}
