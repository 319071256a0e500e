package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	authv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Uninstalling a release that is not there is told apart by Helm's typed error: it must
// survive Helm's wrapping, or "nothing to remove" would become a generic failure.
func TestHelmReleaseNotFoundIsTyped(t *testing.T) {
	cfg := &action.Configuration{Releases: storage.Init(driver.NewMemory()), KubeClient: &kubefake.PrintingKubeClient{Out: io.Discard}, Log: func(string, ...any) {}}
	_, err := action.NewUninstall(cfg).Run(ReleaseName)
	if !errors.Is(err, driver.ErrReleaseNotFound) {
		t.Fatalf("uninstall of a missing release: %v, want driver.ErrReleaseNotFound in the chain", err)
	}
}

func TestExplainHelmErrorByType(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, "pulltrace", errors.New("no"))
	// Helm's create collects per-object errors (a multierror) and wraps them.
	wrapped := fmt.Errorf("failed to create resource: %w", errors.Join(errors.New("other"), forbidden))
	if err := explainHelmError(wrapped, "install", "pulltrace"); ExitCode(err) != ExitForbidden {
		t.Errorf("typed forbidden inside Helm's wrapping: exit %d (%v)", ExitCode(err), err)
	}
	// Text alone decides nothing.
	if err := explainHelmError(errors.New("secrets is forbidden: User cannot list"), "install", "pulltrace"); ExitCode(err) != ExitOther {
		t.Errorf("untyped text: exit %d, want %d", ExitCode(err), ExitOther)
	}
}

func TestDeniedPatchesAsksTheAPIServer(t *testing.T) {
	cs := fake.NewClientset()
	var asked []authv1.ResourceAttributes
	cs.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authv1.SelfSubjectAccessReview)
		asked = append(asked, *r.Spec.ResourceAttributes)
		r.Status.Allowed = r.Spec.ResourceAttributes.Resource != "clusterroles"
		return true, r, nil
	})
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"}, meta.RESTScopeNamespace)
	mapper.Add(schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, meta.RESTScopeRoot)
	manifest := `---
# Source: a.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: pulltrace-agent
---
# Source: b.yaml
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: pulltrace
---
# Source: c.yaml
apiVersion: example.com/v1
kind: Unknown
metadata:
  name: skipped
`
	denied := deniedPatches(context.Background(), cs, mapper, manifest, "pt")
	if !slices.Equal(denied, []string{"clusterroles/pulltrace"}) {
		t.Fatalf("denied %v, want [clusterroles/pulltrace]", denied)
	}
	want := []authv1.ResourceAttributes{
		{Namespace: "pt", Verb: "patch", Resource: "serviceaccounts", Name: "pulltrace-agent"},
		{Verb: "patch", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "pulltrace"},
	}
	slices.SortFunc(asked, func(a, b authv1.ResourceAttributes) int { return len(b.Namespace) - len(a.Namespace) })
	if !slices.Equal(asked, want) {
		t.Fatalf("asked %+v\nwant %+v", asked, want)
	}
}
