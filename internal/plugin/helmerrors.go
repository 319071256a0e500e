package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	authv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

const helmRights = "installing needs rights to create the chart's objects in namespace %s, its ClusterRole and ClusterRoleBinding, and Secrets for Helm's release record"

func explainHelmError(err error, what, ns string) error {
	code := ExitOther
	msg := err.Error()
	switch {
	case apierrors.IsForbidden(err):
		code = ExitForbidden
		msg += " (" + fmt.Sprintf(helmRights, ns) + ")"
	case isNetworkError(err):
		code = ExitUnreachable
	}
	return exitErr(code, err, "%s release %s in namespace %s: %s", what, ReleaseName, ns, msg)
}

// explainUpgradeError is explainHelmError for an upgrade. Helm's upgrade joins the errors of
// the objects it patches into one text, which drops their type; when no API status is left
// in the chain, the API server is asked which of the release's objects the user may not
// patch, and that answer, not the text, decides whether the upgrade was forbidden.
func explainUpgradeError(ctx context.Context, cfg *action.Configuration, rel *release.Release, err error, ns string) error {
	var st apierrors.APIStatus
	if errors.As(err, &st) || rel == nil || cfg.RESTClientGetter == nil {
		return explainHelmError(err, "upgrade", ns)
	}
	mapper, merr := cfg.RESTClientGetter.ToRESTMapper()
	cs, cerr := cfg.KubernetesClientSet()
	if merr != nil || cerr != nil {
		return explainHelmError(err, "upgrade", ns)
	}
	denied := deniedPatches(ctx, cs, mapper, rel.Manifest, ns)
	if len(denied) == 0 {
		return explainHelmError(err, "upgrade", ns)
	}
	return exitErr(ExitForbidden, err, "upgrade release %s in namespace %s: forbidden: you may not patch %s (%s): %v",
		ReleaseName, ns, strings.Join(denied, ", "), fmt.Sprintf(helmRights, ns), err)
}

// deniedPatches lists the objects of a manifest ("resource/name") that the API server says
// the user may not patch. Objects it cannot map or ask about are left out: this only
// explains a failure, it never causes one.
func deniedPatches(ctx context.Context, cs kubernetes.Interface, mapper meta.RESTMapper, manifest, ns string) []string {
	var denied []string
	for _, doc := range releaseutil.SplitManifests(manifest) {
		var obj struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil || obj.Kind == "" {
			continue
		}
		gvk := schema.FromAPIVersionAndKind(obj.APIVersion, obj.Kind)
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			continue
		}
		attr := &authv1.ResourceAttributes{Verb: "patch", Group: m.Resource.Group, Resource: m.Resource.Resource, Name: obj.Metadata.Name}
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			attr.Namespace = obj.Metadata.Namespace
			if attr.Namespace == "" {
				attr.Namespace = ns
			}
		}
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attr}}, metav1.CreateOptions{})
		if err == nil && !r.Status.Allowed {
			denied = append(denied, m.Resource.Resource+"/"+obj.Metadata.Name)
		}
	}
	return denied
}
