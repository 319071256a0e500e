package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Exit codes. They are part of the command's interface (scripts branch on them) and are
// listed in the root command's help, so they only ever gain members.
const (
	ExitOK = 0
	// ExitPullFailed: a followed pull failed (the error text is printed).
	ExitPullFailed = 1
	// ExitUsage: bad flags or arguments.
	ExitUsage = 2
	// ExitNotFound: the pod, node or workload does not exist, or Pulltrace is not installed.
	ExitNotFound = 3
	// ExitForbidden: the API server refused the request (RBAC) or the credentials.
	ExitForbidden = 4
	// ExitUnreachable: the API server or the Pulltrace server pods cannot be reached.
	ExitUnreachable = 5
	// ExitOther: anything else (a bad kubeconfig, a failed install, a timeout).
	ExitOther = 6
	// ExitInterrupted: stopped by Ctrl-C or SIGTERM before the outcome was known.
	ExitInterrupted = 130
)

const exitCodesHelp = `Exit codes:
  0    success (follow: every pull of the pod completed, or its images were already present)
  1    a followed pull failed
  2    usage error (bad flag or argument)
  3    not found: the pod, node or workload does not exist, or Pulltrace is not installed
  4    forbidden: RBAC denied a request (the missing permission is named) or bad credentials
  5    unreachable: the API server, or the Pulltrace server pods behind the service proxy
  6    any other error, or follow --timeout expired
  130  interrupted`

// ExitError carries the exit code a failure maps to and the sentence shown to the user.
type ExitError struct {
	Code int
	Msg  string
	Err  error
}

func (e *ExitError) Error() string {
	switch {
	case e.Msg != "":
		return e.Msg
	case e.Err != nil:
		return e.Err.Error()
	}
	return fmt.Sprintf("exit code %d", e.Code)
}

func (e *ExitError) Unwrap() error { return e.Err }

func exitErr(code int, err error, format string, args ...any) *ExitError {
	return &ExitError{Code: code, Err: err, Msg: fmt.Sprintf(format, args...)}
}

func usageErr(format string, args ...any) *ExitError {
	return &ExitError{Code: ExitUsage, Msg: fmt.Sprintf(format, args...)}
}

// ExitCode maps an error returned by a command to the process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if errors.Is(err, context.Canceled) {
		return ExitInterrupted
	}
	return ExitOther
}

// explainProxyError turns a failed request through the service proxy into an error that
// names what the user can do about it: install, ask for a permission, or fix the pods.
func (s *Server) explainProxyError(ctx context.Context, err error, path string, body []byte) error {
	if err == nil {
		return nil
	}
	var ee *ExitError
	if errors.As(err, &ee) || errors.Is(err, context.Canceled) {
		return err
	}
	svc := s.Namespace + "/" + s.Service
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		if isNetworkError(err) {
			return exitErr(ExitUnreachable, err, "cannot reach the Kubernetes API server: %v", err)
		}
		return fmt.Errorf("request %s through the service proxy of %s: %w", path, svc, err)
	}
	status := st.Status()
	msg := statusMessage(status)
	if len(body) > 0 && (msg == "" || msg == "unknown" || apierrors.IsUnexpectedServerError(err)) {
		msg = serverText(string(body))
	}
	switch {
	case apierrors.IsForbidden(err):
		return exitErr(ExitForbidden, err,
			"forbidden: you need permission to get services/proxy in namespace %s: the plugin reaches the Pulltrace server only through the API server's service proxy, so it needs `get` on `services/proxy` (resourceName %s) there; check with `kubectl auth can-i get services/%s --subresource=proxy -n %s`\n(API server: %s)",
			s.Namespace, s.Service, s.Service, s.Namespace, msg)
	case apierrors.IsUnauthorized(err):
		return exitErr(ExitForbidden, err, "the API server did not accept your credentials (%s); check the user of your kubeconfig context", msg)
	case apierrors.IsNotFound(err) && status.Details != nil && status.Details.Kind == "services":
		// The API server's own "services NAME not found"; a 404 of the Pulltrace server
		// itself carries no such details.
		return notInstalled(err, svc)
	case proxyUnreachable(err, int(status.Code)):
		// The API server says "no endpoints available" for a Service that does not exist
		// as much as for one whose pods are not ready; the Service itself tells them apart.
		if s.core != nil {
			_, gerr := s.core.CoreV1().Services(s.Namespace).Get(ctx, s.Service, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(gerr):
				return notInstalled(err, svc)
			case gerr != nil:
				return exitErr(ExitUnreachable, err,
					"the Pulltrace server behind service %s is not reachable (%s): either Pulltrace is not installed there (`kubectl pulltrace install`) or its server pods are not ready (`kubectl -n %s get pods`)",
					svc, firstLine(msg), s.Namespace)
			}
		}
		return exitErr(ExitUnreachable, err,
			"the Pulltrace server behind service %s is not reachable: its pods are not ready or not running (%s); check `kubectl -n %s get pods -l app.kubernetes.io/component=server`",
			svc, firstLine(msg), s.Namespace)
	case apierrors.IsNotFound(err):
		return exitErr(ExitNotFound, err, "the Pulltrace server has no endpoint %s (is it older than this plugin? compare `kubectl pulltrace version`): %s", path, firstLine(msg))
	}
	return exitErr(ExitOther, err, "request %s through the service proxy of %s failed: %s", path, svc, firstLine(msg))
}

func notInstalled(err error, svc string) error {
	return exitErr(ExitNotFound, err,
		"Pulltrace is not installed: service %s not found. Install it with `kubectl pulltrace install`, or point --server-namespace/--server-service at an existing installation", svc)
}

// statusMessage prefers what the API server (or the Pulltrace server behind it) said over
// client-go's generic text for the status code.
func statusMessage(st metav1.Status) string {
	if st.Details != nil {
		for _, c := range st.Details.Causes {
			if c.Type == metav1.CauseTypeUnexpectedServerResponse && strings.TrimSpace(c.Message) != "" && c.Message != "unknown" {
				return serverText(c.Message)
			}
		}
	}
	return strings.TrimSpace(st.Message)
}

// serverText pulls the message out of a JSON Status or {"error": ...} body.
func serverText(body string) string {
	var v struct {
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	if json.Unmarshal([]byte(body), &v) == nil {
		if v.Message != "" {
			return v.Message
		}
		if v.Error != "" {
			return v.Error
		}
	}
	return strings.TrimSpace(body)
}

// proxyUnreachable recognises the proxy's answers for a Service with no ready endpoint,
// or an endpoint that does not accept connections: a gateway status, or a server error
// that the API server wrote itself (a Status object) rather than passed on from the
// Pulltrace server (whose bodies client-go reports as an unexpected server response).
func proxyUnreachable(err error, code int) bool {
	switch code {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return code >= 500 && !apierrors.IsUnexpectedServerError(err)
}

func isNetworkError(err error) bool {
	var ne net.Error
	var ue *url.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ue) || errors.As(err, &ne)
}

// explainKubeError is explainProxyError for plain API reads (pods, nodes, workloads).
func explainKubeError(err error, verb, resource, namespace, name string) error {
	if err == nil {
		return nil
	}
	where := ""
	if namespace != "" {
		where = " in namespace " + namespace
	}
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case apierrors.IsNotFound(err):
		if name != "" {
			return exitErr(ExitNotFound, err, "%s %q not found%s", singular(resource), name, where)
		}
		return exitErr(ExitNotFound, err, "%s not found%s", resource, where)
	case apierrors.IsForbidden(err):
		return exitErr(ExitForbidden, err, "forbidden: you need permission to %s %s%s (check with `kubectl auth can-i %s %s%s`)",
			verb, resource, where, verb, resource, nsFlag(namespace))
	case apierrors.IsUnauthorized(err):
		return exitErr(ExitForbidden, err, "the API server did not accept your credentials; check the user of your kubeconfig context")
	case isNetworkError(err):
		return exitErr(ExitUnreachable, err, "cannot reach the Kubernetes API server: %v", err)
	}
	return fmt.Errorf("%s %s%s: %w", verb, resource, where, err)
}

func nsFlag(ns string) string {
	if ns == "" {
		return ""
	}
	return " -n " + ns
}

func singular(resource string) string {
	switch resource {
	case "pods":
		return "pod"
	case "nodes":
		return "node"
	case "deployments":
		return "deployment"
	case "replicasets":
		return "replicaset"
	case "statefulsets":
		return "statefulset"
	case "daemonsets":
		return "daemonset"
	case "jobs":
		return "job"
	}
	return resource
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
