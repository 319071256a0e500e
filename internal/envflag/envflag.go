// Package envflag gives every command-line flag an environment fallback, so the same
// binaries are configured by flags in a terminal and by env in a Pod spec.
package envflag

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Name maps a flag name to its variable: prefix "PULLTRACE", flag "poll-interval" ->
// PULLTRACE_POLL_INTERVAL.
func Name(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Apply sets every flag not given on the command line from its variable, if set. Call it
// after fs.Parse. A bad value names both the variable and the flag.
func Apply(fs *flag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		env := Name(prefix, f.Name)
		v, ok := lookup(env)
		if !ok || v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("environment variable %s (for --%s): %w", env, f.Name, e)
		}
	})
	return err
}

// Usage documents the env fallback of each flag in --help output.
func Usage(fs *flag.FlagSet, prefix, summary string) func() {
	return func() {
		out := fs.Output()
		fmt.Fprintf(out, "%s\n\nFlags (each also read from the environment variable shown):\n", summary)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(out, "  --%s %s\t[%s]\n    \t%s", f.Name, name, Name(prefix, f.Name), usage)
			if f.DefValue != "" && f.DefValue != "[]" {
				fmt.Fprintf(out, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(out)
		})
	}
}

// List is a repeatable string flag that also splits on commas, so one env variable can
// carry several values.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set appends comma-separated values.
func (l *List) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// Level parses a --log-level value.
func Level(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Common are the flags every Pulltrace daemon has, parsed by Parse.
type Common struct {
	Level   slog.Level
	Version bool
}

// Parse registers --log-level and --version, parses args, applies the environment and
// checks the level: the start-up both daemons share. ErrHelp comes back for --help.
func Parse(fs *flag.FlagSet, args []string, prefix, summary string) (Common, error) {
	level := fs.String("log-level", "info", "debug, info, warn or error")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = Usage(fs, prefix, summary)
	if err := fs.Parse(args); err != nil {
		return Common{}, err
	}
	if err := Apply(fs, prefix, nil); err != nil {
		return Common{}, err
	}
	lvl, err := Level(*level)
	if err != nil {
		return Common{}, err
	}
	return Common{Level: lvl, Version: *version}, nil
}
