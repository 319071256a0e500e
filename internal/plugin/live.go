package plugin

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// ANSI sequences the live view uses. It never clears the whole screen or homes the cursor:
// it moves up over the lines it drew itself and rewrites them, so scrollback and the
// lines above stay intact and nothing flickers.
const (
	ansiClearLine = "\x1b[2K"
	ansiClearDown = "\x1b[J"
)

func ansiUp(n int) string { return fmt.Sprintf("\x1b[%dA", n) }

// Live is a block of lines redrawn in place at the bottom of a terminal, with permanent
// lines committed above it, the way `docker pull` draws its progress.
type Live struct {
	w io.Writer
	// Width is the terminal width; lines are cut to Width-1 so none wraps (a wrapped line
	// would make the cursor-up count wrong). 0 means no limit.
	Width int

	drawn     int // live lines currently on screen
	committed []string
	lines     []string
	dirty     bool
}

// NewLive draws on w.
func NewLive(w io.Writer, width int) *Live { return &Live{w: w, Width: width} }

// Commit queues a permanent line to appear above the live block at the next Flush.
func (l *Live) Commit(line string) {
	l.committed = append(l.committed, line)
	l.dirty = true
}

// SetLines replaces the live block's content.
func (l *Live) SetLines(lines []string) {
	if !equalLines(l.lines, lines) {
		l.lines = append(l.lines[:0], lines...)
		l.dirty = true
	}
}

// Dirty reports whether a Flush would change the screen.
func (l *Live) Dirty() bool { return l.dirty }

// Flush redraws: up over the previous live block, committed lines, the new live block,
// and an erase of whatever the old block had below the new one.
func (l *Live) Flush() error {
	if !l.dirty {
		return nil
	}
	var b bytes.Buffer
	if l.drawn > 0 {
		b.WriteString("\r")
		b.WriteString(ansiUp(l.drawn))
	}
	for _, s := range l.committed {
		b.WriteString(ansiClearLine)
		b.WriteString(l.fit(s))
		b.WriteByte('\n')
	}
	for _, s := range l.lines {
		b.WriteString(ansiClearLine)
		b.WriteString(l.fit(s))
		b.WriteByte('\n')
	}
	if len(l.committed)+len(l.lines) < l.drawn {
		b.WriteString(ansiClearDown)
	}
	l.drawn = len(l.lines)
	l.committed = l.committed[:0]
	l.dirty = false
	_, err := l.w.Write(b.Bytes())
	return err
}

func (l *Live) fit(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if l.Width > 1 {
		return truncate(s, l.Width-1)
	}
	return s
}

func equalLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
