package correlate

import (
	"testing"

	"github.com/d44b/pulltrace/pkg/api"
)

func TestNormalisation(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":                         "docker.io/library/nginx:latest",
		"nginx:1.27":                    "docker.io/library/nginx:1.27",
		"ghcr.io/org/app:v1":            "ghcr.io/org/app:v1",
		"127.0.0.1:5001/probe/random:x": "127.0.0.1:5001/probe/random:x",
	} {
		img, ok := parseImage(in)
		if !ok || img.full != want {
			t.Errorf("%s -> %q, want %q", in, img.full, want)
		}
	}
	if img, _ := parseImage("127.0.0.1:5001/probe/random:x"); img.repoKey != "127.0.0.1/probe/random" {
		t.Errorf("repo key %q drops the port like containerd's label", img.repoKey)
	}
	if _, ok := parseImage("UPPER/Case"); ok {
		t.Error("accepted an invalid reference")
	}
}

func TestMatches(t *testing.T) {
	digest := "sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"
	labelOnly := &api.Pull{ImageRef: "127.0.0.1/shop/web", Repository: "127.0.0.1/shop/web", ManifestDigest: digest}
	tagged := &api.Pull{ImageRef: "127.0.0.1:5001/shop/web:1.2", ManifestDigest: digest}
	img := func(s string) image { i, _ := parseImage(s); return i }
	cases := []struct {
		name    string
		pod     string
		pull    *api.Pull
		pulling string
		want    bool
	}{
		{"repo only matches any tag", "127.0.0.1:5001/shop/web:1.2", labelOnly, "", true},
		{"kubelet says which tag", "127.0.0.1:5001/shop/web:1.3", labelOnly, "127.0.0.1:5001/shop/web:1.2", false},
		{"kubelet says this tag", "127.0.0.1:5001/shop/web:1.2", labelOnly, "127.0.0.1:5001/shop/web:1.2", true},
		{"other repo", "127.0.0.1:5001/shop/api:1.2", labelOnly, "", false},
		{"exact tag", "127.0.0.1:5001/shop/web:1.2", tagged, "", true},
		{"other tag", "127.0.0.1:5001/shop/web:1.3", tagged, "", false},
		{"by digest", "127.0.0.1:5001/shop/web@" + digest, tagged, "", true},
		{"other digest", "127.0.0.1:5001/shop/web@sha256:" + "cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34", tagged, "", false},
		{"docker hub short name", "nginx", &api.Pull{ImageRef: "docker.io/library/nginx"}, "", true},
	}
	for _, c := range cases {
		if got := matches(img(c.pod), c.pull, c.pulling); got != c.want {
			t.Errorf("%s: got %v", c.name, got)
		}
		// A change to the pod's image must reach every pull the image matches, or
		// re-correlation would skip it.
		nc := &nodeChange{repos: map[string]bool{}, digests: map[string]bool{}}
		nc.image(img(c.pod))
		if c.want && !nc.concerns(c.pull) {
			t.Errorf("%s: matches, but a change of the pod's image does not concern the pull", c.name)
		}
	}
}
