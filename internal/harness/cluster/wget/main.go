// Command wget is the subset of busybox wget that the harness's test pods use (-q, -T SECONDS,
// -O FILE, one http URL). Debian's static busybox resolves names through glibc's NSS, which
// crashes in a container; this one is pure Go, so Service names resolve through cluster DNS.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	quiet := flag.Bool("q", false, "quiet")
	timeout := flag.Int("T", 30, "timeout in seconds")
	out := flag.String("O", "", "output file, - for stdout")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: wget [-q] [-T SEC] [-O FILE] URL")
		os.Exit(2)
	}
	c := &http.Client{Timeout: time.Duration(*timeout) * time.Second}
	resp, err := c.Get(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "wget:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		fmt.Fprintln(os.Stderr, "wget: server returned error:", resp.Status)
		os.Exit(1)
	}
	w := io.Writer(os.Stdout)
	if *out != "" && *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wget:", err)
			os.Exit(1)
		}
		defer f.Close()
		w = f
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		fmt.Fprintln(os.Stderr, "wget:", err)
		os.Exit(1)
	}
	if !*quiet {
		fmt.Fprintln(os.Stderr, "wget: done")
	}
}
