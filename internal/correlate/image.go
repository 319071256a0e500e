package correlate

import (
	"strings"

	"github.com/distribution/reference"

	"github.com/d44b/pulltrace/pkg/api"
)

// image is a container image reference broken into the parts matching needs.
type image struct {
	// full is the normalised reference: docker.io/library/nginx:latest.
	full string
	// repoKey is registry host without port + "/" + path: the only name containerd's
	// distribution.source label keeps before a pull finishes.
	repoKey string
	// repo is the repository with its registry host and port: docker.io/library/nginx.
	repo   string
	tag    string
	digest string
}

// parseImage normalises a reference the way the kubelet and containerd do: "nginx" is
// docker.io/library/nginx:latest.
func parseImage(s string) (image, bool) {
	named, err := reference.ParseNormalizedNamed(strings.TrimSpace(s))
	if err != nil {
		return image{}, false
	}
	img := image{}
	if d, ok := named.(reference.Digested); ok {
		img.digest = d.Digest().String()
	}
	if t, ok := named.(reference.Tagged); ok {
		img.tag = t.Tag()
	}
	if img.digest == "" {
		named = reference.TagNameOnly(named)
		if t, ok := named.(reference.Tagged); ok {
			img.tag = t.Tag()
		}
	}
	img.full = named.String()
	img.repo = reference.TrimNamed(named).String()
	host := reference.Domain(named)
	if h, _, ok := strings.Cut(host, ":"); ok && !strings.HasPrefix(host, "[") {
		host = h
	}
	img.repoKey = host + "/" + reference.Path(named)
	return img, true
}

// repoKeyOf gives a pull's repository key, whether its ref is a label-derived
// "host/path" or a full image name.
func repoKeyOf(ref string) string {
	if ref == "" {
		return ""
	}
	if img, ok := parseImage(ref); ok {
		return img.repoKey
	}
	return ref
}

// hasTagOrDigest reports whether a pull's ref already names one exact image.
func hasTagOrDigest(ref string) bool {
	if strings.Contains(ref, "@") {
		return true
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	return strings.Contains(last, ":")
}

// matches reports whether a pod's container image is served by pull p. pulling is the
// exact ref the kubelet last announced for p's repository on p's node, if any.
func matches(podImage image, p *api.Pull, pulling string) bool {
	if podImage.digest != "" {
		return podImage.digest == p.ManifestDigest || (p.IndexDigest != "" && podImage.digest == p.IndexDigest)
	}
	if hasTagOrDigest(p.ImageRef) {
		if pi, ok := parseImage(p.ImageRef); ok {
			if pi.digest != "" && pi.tag == "" {
				return false
			}
			return pi.repoKey == podImage.repoKey && pi.tag == podImage.tag
		}
		return false
	}
	if repoKeyOf(p.ImageRef) != podImage.repoKey && repoKeyOf(p.Repository) != podImage.repoKey {
		return false
	}
	// Only the repository is known: the kubelet's "Pulling image" event says which tag.
	if pulling != "" {
		if pi, ok := parseImage(pulling); ok && pi.repoKey == podImage.repoKey {
			return pi.tag == podImage.tag
		}
	}
	return true
}
