package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of one report, far above what a real node sends: the largest real images have
// a little over 100 layers (overlayfs stacks at most 128), and a node holds a few hundred
// pulls at most. They bound what one request can make the server hold and answer.
const (
	MaxPullsPerReport = 1000
	MaxLayersPerPull  = 1000
	MaxNodeNameLen    = 253 // a Kubernetes node name: a DNS-1123 subdomain
	MaxIDLen          = 256
	MaxRefLen         = 2048
	MaxErrorLen       = 8192
	// MaxReportErrors is how many errors an answer lists; the rest are counted.
	MaxReportErrors = 10
	// maxEcho bounds a value quoted back in an error message.
	maxEcho = 64
)

// FieldError names the field of a report that is wrong, so a rejected agent (or a person
// with curl) can see what to fix.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ReportError is a report refused as a whole. Errors holds the first MaxReportErrors
// problems, Count how many there were.
type ReportError struct {
	Errors []*FieldError
	Count  int
}

func (e *ReportError) Error() string {
	var b strings.Builder
	for i, fe := range e.Errors {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(fe.Error())
	}
	if more := e.Count - len(e.Errors); more > 0 {
		fmt.Fprintf(&b, "; and %d more", more)
	}
	return b.String()
}

// Unwrap lets errors.As find the first FieldError.
func (e *ReportError) Unwrap() []error {
	out := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		out[i] = fe
	}
	return out
}

// PullRejection names one pull the server left out of an otherwise applied report.
type PullRejection struct {
	Index int    `json:"index"`
	ID    string `json:"id,omitempty"`
	Error string `json:"error"`
}

// echo quotes a value for an error message, cut to maxEcho bytes so that an answer never
// grows with the input.
func echo(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + fmt.Sprintf("... (%d bytes)", len(s))
}

// errList collects at most MaxReportErrors errors and counts the rest.
type errList struct {
	errs  []*FieldError
	count int
}

func (l *errList) add(fe *FieldError) {
	l.count++
	if len(l.errs) < MaxReportErrors {
		l.errs = append(l.errs, fe)
	}
}

func (l *errList) err() error {
	if l.count == 0 {
		return nil
	}
	return &ReportError{Errors: l.errs, Count: l.count}
}

// ValidNodeName reports whether s is a valid Kubernetes node name: a DNS-1123 subdomain
// (lower-case alphanumerics, '-' and '.', each dot-separated label starting and ending
// alphanumeric) of at most 253 characters.
func ValidNodeName(s string) bool {
	if s == "" || len(s) > MaxNodeNameLen {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || !alnum(label[0]) || !alnum(label[len(label)-1]) {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !alnum(c) && c != '-' {
				return false
			}
		}
	}
	return true
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// plainText reports whether s is valid UTF-8 without control characters (newlines, ESC,
// NUL), so that it cannot forge log lines or terminal output.
func plainText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func checkText(field, s string, maxLen int, required bool) *FieldError {
	switch {
	case s == "" && required:
		return fieldErr(field, "is required")
	case len(s) > maxLen:
		return fieldErr(field, "is %d bytes, more than %d", len(s), maxLen)
	case !plainText(s):
		return fieldErr(field, "%s is not printable UTF-8 text", echo(s))
	}
	return nil
}

// Validate checks a report before anything of it is applied: the report as a whole and
// every pull. It returns nil or a *ReportError whose size does not grow with the report.
func (r *AgentReport) Validate() error {
	if err := r.ValidateHeader(); err != nil {
		return err
	}
	var l errList
	r.checkPulls(func(_ int, _ *Pull, fe *FieldError) { l.add(fe) })
	return l.err()
}

// ValidateHeader checks what makes the whole report unusable: its version, node, agent,
// time and size. A report that passes it can be applied with its bad pulls left out.
func (r *AgentReport) ValidateHeader() error {
	var l errList
	if r.SchemaVersion != SchemaVersion {
		l.add(fieldErr("schemaVersion", "must be %q, got %s", SchemaVersion, echo(r.SchemaVersion)))
	}
	if !ValidNodeName(r.NodeName) {
		if r.NodeName == "" {
			l.add(fieldErr("nodeName", "is required"))
		} else {
			l.add(fieldErr("nodeName", "%s is not a Kubernetes node name (a DNS-1123 subdomain of at most %d characters)", echo(r.NodeName), MaxNodeNameLen))
		}
	}
	if fe := checkText("agentId", r.AgentID, MaxIDLen, false); fe != nil {
		l.add(fe)
	}
	if fe := checkText("agentVersion", r.AgentVersion, MaxIDLen, false); fe != nil {
		l.add(fe)
	}
	if r.Timestamp.IsZero() {
		l.add(fieldErr("timestamp", "is required"))
	}
	if r.Heartbeat && len(r.Pulls) > 0 {
		l.add(fieldErr("pulls", "a heartbeat carries no pulls"))
	}
	if len(r.Pulls) > MaxPullsPerReport {
		l.add(fieldErr("pulls", "%d pulls, more than %d", len(r.Pulls), MaxPullsPerReport))
	}
	return l.err()
}

// ValidatePulls checks each pull and returns the ones to leave out; the first
// MaxReportErrors are named in full, later ones carry only their index. A duplicate id is
// left out after its first occurrence.
func (r *AgentReport) ValidatePulls() []PullRejection {
	var out []PullRejection
	r.checkPulls(func(i int, p *Pull, fe *FieldError) {
		rej := PullRejection{Index: i}
		if len(out) < MaxReportErrors {
			rej.Error = fe.Error()
			if len(p.ID) <= MaxIDLen && plainText(p.ID) {
				rej.ID = p.ID
			}
		}
		out = append(out, rej)
	})
	return out
}

func (r *AgentReport) checkPulls(bad func(i int, p *Pull, fe *FieldError)) {
	seen := make(map[string]bool, len(r.Pulls))
	for i := range r.Pulls {
		p := &r.Pulls[i]
		var fe *FieldError
		switch {
		case p.ID == "":
			fe = fieldErr("id", "is required")
		case len(p.ID) > MaxIDLen || !plainText(p.ID):
			fe = checkText("id", p.ID, MaxIDLen, true)
		case seen[p.ID]:
			fe = fieldErr("id", "duplicate id %s", echo(p.ID))
		case p.NodeName != "" && p.NodeName != r.NodeName:
			fe = fieldErr("nodeName", "%s differs from the report's node", echo(p.NodeName))
		default:
			seen[p.ID] = true
			fe = p.validate()
		}
		if fe != nil {
			fe.Field = fmt.Sprintf("pulls[%d].%s", i, fe.Field)
			bad(i, p, fe)
		}
	}
}

func (p *Pull) validate() *FieldError {
	if !p.State.Valid() || p.State == PullQueued {
		return fieldErr("state", "unknown state %s", echo(string(p.State)))
	}
	if fe := checkText("imageRef", p.ImageRef, MaxRefLen, false); fe != nil {
		return fe
	}
	if fe := checkText("repository", p.Repository, MaxRefLen, false); fe != nil {
		return fe
	}
	if fe := checkText("manifestDigest", p.ManifestDigest, MaxIDLen, false); fe != nil {
		return fe
	}
	if fe := checkText("indexDigest", p.IndexDigest, MaxIDLen, false); fe != nil {
		return fe
	}
	if len(p.Error) > MaxErrorLen || !utf8.ValidString(p.Error) {
		return fieldErr("error", "is %d bytes or not UTF-8 (at most %d)", len(p.Error), MaxErrorLen)
	}
	if p.TotalBytes < 0 {
		return fieldErr("totalBytes", "is negative (%d)", p.TotalBytes)
	}
	if p.DownloadedBytes < 0 {
		return fieldErr("downloadedBytes", "is negative (%d)", p.DownloadedBytes)
	}
	if p.TotalKnown && p.DownloadedBytes > p.TotalBytes {
		return fieldErr("downloadedBytes", "%d exceeds totalBytes %d", p.DownloadedBytes, p.TotalBytes)
	}
	if p.StartedAt.IsZero() {
		return fieldErr("startedAt", "is required")
	}
	if len(p.Layers) > MaxLayersPerPull {
		return fieldErr("layers", "%d layers, more than %d", len(p.Layers), MaxLayersPerPull)
	}
	if len(p.Pods) > MaxLayersPerPull {
		return fieldErr("pods", "%d pods, more than %d", len(p.Pods), MaxLayersPerPull)
	}
	for j := range p.Layers {
		l := &p.Layers[j]
		lp := fmt.Sprintf("layers[%d]", j)
		switch {
		case l.Digest == "" || len(l.Digest) > MaxIDLen || !plainText(l.Digest):
			return checkTextOr(lp+".digest", l.Digest)
		case len(l.MediaType) > MaxIDLen || !plainText(l.MediaType):
			return checkText(lp+".mediaType", l.MediaType, MaxIDLen, false)
		case !l.State.Valid():
			return fieldErr(lp+".state", "unknown state %s", echo(string(l.State)))
		case l.TotalBytes < 0:
			return fieldErr(lp+".totalBytes", "is negative (%d)", l.TotalBytes)
		case l.DownloadedBytes < 0:
			return fieldErr(lp+".downloadedBytes", "is negative (%d)", l.DownloadedBytes)
		case l.TotalBytes > 0 && l.DownloadedBytes > l.TotalBytes:
			return fieldErr(lp+".downloadedBytes", "%d exceeds totalBytes %d", l.DownloadedBytes, l.TotalBytes)
		}
	}
	for j := range p.Pods {
		pod := &p.Pods[j]
		if fe := checkText(fmt.Sprintf("pods[%d]", j), pod.Namespace+"/"+pod.PodName+"/"+pod.Container, MaxRefLen, false); fe != nil {
			return fe
		}
	}
	return nil
}

func checkTextOr(field, s string) *FieldError {
	if fe := checkText(field, s, MaxIDLen, true); fe != nil {
		return fe
	}
	return fieldErr(field, "is invalid")
}

// IsReportError reports whether err is a refused report, for callers that answer 400.
func IsReportError(err error) bool {
	var re *ReportError
	return errors.As(err, &re)
}
