package api

import (
	"errors"
	"fmt"
)

// FieldError names the field of a report that is wrong, so a rejected agent (or a person
// with curl) can see what to fix.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks a report before anything of it is applied.
func (r *AgentReport) Validate() error {
	if r.SchemaVersion != SchemaVersion {
		return fieldErr("schemaVersion", "must be %q, got %q", SchemaVersion, r.SchemaVersion)
	}
	if r.NodeName == "" {
		return fieldErr("nodeName", "is required")
	}
	if r.Timestamp.IsZero() {
		return fieldErr("timestamp", "is required")
	}
	if r.Heartbeat && len(r.Pulls) > 0 {
		return fieldErr("pulls", "a heartbeat carries no pulls")
	}
	seen := make(map[string]bool, len(r.Pulls))
	var errs []error
	for i := range r.Pulls {
		p := &r.Pulls[i]
		prefix := fmt.Sprintf("pulls[%d]", i)
		if p.ID == "" {
			errs = append(errs, fieldErr(prefix+".id", "is required"))
			continue
		}
		if seen[p.ID] {
			errs = append(errs, fieldErr(prefix+".id", "duplicate id %q", p.ID))
		}
		seen[p.ID] = true
		if p.NodeName != "" && p.NodeName != r.NodeName {
			errs = append(errs, fieldErr(prefix+".nodeName", "%q differs from the report's node %q", p.NodeName, r.NodeName))
		}
		if err := p.validate(prefix); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p *Pull) validate(prefix string) error {
	if !p.State.Valid() {
		return fieldErr(prefix+".state", "unknown state %q", p.State)
	}
	if p.TotalBytes < 0 {
		return fieldErr(prefix+".totalBytes", "is negative (%d)", p.TotalBytes)
	}
	if p.DownloadedBytes < 0 {
		return fieldErr(prefix+".downloadedBytes", "is negative (%d)", p.DownloadedBytes)
	}
	if p.TotalKnown && p.DownloadedBytes > p.TotalBytes {
		return fieldErr(prefix+".downloadedBytes", "%d exceeds totalBytes %d", p.DownloadedBytes, p.TotalBytes)
	}
	if p.StartedAt.IsZero() {
		return fieldErr(prefix+".startedAt", "is required")
	}
	for j := range p.Layers {
		l := &p.Layers[j]
		lp := fmt.Sprintf("%s.layers[%d]", prefix, j)
		switch {
		case l.Digest == "":
			return fieldErr(lp+".digest", "is required")
		case !l.State.Valid():
			return fieldErr(lp+".state", "unknown state %q", l.State)
		case l.TotalBytes < 0:
			return fieldErr(lp+".totalBytes", "is negative (%d)", l.TotalBytes)
		case l.DownloadedBytes < 0:
			return fieldErr(lp+".downloadedBytes", "is negative (%d)", l.DownloadedBytes)
		case l.TotalBytes > 0 && l.DownloadedBytes > l.TotalBytes:
			return fieldErr(lp+".downloadedBytes", "%d exceeds totalBytes %d", l.DownloadedBytes, l.TotalBytes)
		}
	}
	return nil
}
