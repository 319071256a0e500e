package api

import "github.com/distribution/reference"

// ExactRepository is the repository of an image reference that names one image (it has a
// tag or a digest), with its registry host and port: "127.0.0.1:5000/shop/web" for
// "127.0.0.1:5000/shop/web:1.0". A bare "registry/repo" (containerd's label before the tag
// is known, which has lost the port) is not exact and gives false.
func ExactRepository(ref string) (string, bool) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", false
	}
	_, tagged := named.(reference.Tagged)
	_, digested := named.(reference.Digested)
	if !tagged && !digested {
		return "", false
	}
	return reference.TrimNamed(named).String(), true
}
