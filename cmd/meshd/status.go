package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// cmdStatus reads the admin API and prints what it says. The flags are the
// common settings (--admin-addr among them) plus --json.
func cmdStatus(e env) int {
	jsonOut := false
	var args []string
	for _, a := range e.args {
		if a == "--json" || a == "-json" {
			jsonOut = true
			continue
		}
		args = append(args, a)
	}
	e.args = args
	cfg, _, code, ok := loadConfig(e, 0)
	if !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	docs := map[string]json.RawMessage{}
	for _, path := range []string{"/breakers", "/endpoints"} {
		body, err := fetch(ctx, "http://"+cfg.AdminAddr+path)
		if err != nil {
			fmt.Fprintf(e.stderr, "meshd status: admin API not reachable at %s: %v\n", cfg.AdminAddr, err)
			return exitFailure
		}
		docs[path[1:]] = body
	}
	if jsonOut {
		out, _ := json.MarshalIndent(docs, "", "  ")
		fmt.Fprintf(e.stdout, "%s\n", out)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "%s\n%s\n", docs["breakers"], docs["endpoints"])
	return exitOK
}

func fetch(ctx context.Context, url string) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if !json.Valid(body) {
		return nil, fmt.Errorf("GET %s: not JSON", url)
	}
	return body, nil
}
