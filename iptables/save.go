package iptables

import (
	"fmt"
	"strings"
)

// natState is what iptables-save prints for the nat table, reduced to what
// Apply and Clean need.
type natState struct {
	chains []string    // every chain declared, built-in ones included
	rules  []savedRule // every rule, in save order
}

// savedRule is one "-A" line of iptables-save output.
type savedRule struct {
	chain  string // the chain the rule is in
	target string // its -j or -g target, "" if none
	line   string // the line as saved, without surrounding blanks
}

// hasRule reports whether the exact rule line is installed.
func (s *natState) hasRule(line string) bool {
	for _, r := range s.rules {
		if r.line == line {
			return true
		}
	}
	return false
}

// parseSave parses iptables-save (or ip6tables-save) output and returns
// the nat table; other tables are skipped, and output without a nat table
// gives an empty state. Comment lines and counters are ignored.
func parseSave(text string) (natState, error) {
	var st natState
	table := ""
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "*"):
			table = line[1:]
			continue
		case line == "COMMIT":
			table = ""
			continue
		case table != "nat":
			continue
		}
		switch {
		case strings.HasPrefix(line, ":"):
			// ":NAME POLICY [packets:bytes]"
			name, _, _ := strings.Cut(line[1:], " ")
			if name == "" {
				return natState{}, fmt.Errorf("line %d: chain declaration without a name: %q", i+1, line)
			}
			st.chains = append(st.chains, name)
		case strings.HasPrefix(line, "-A "):
			args, err := splitArgs(line)
			if err != nil {
				return natState{}, fmt.Errorf("line %d: %w", i+1, err)
			}
			if len(args) < 2 {
				return natState{}, fmt.Errorf("line %d: rule without a chain: %q", i+1, line)
			}
			r := savedRule{chain: args[1], line: line}
			for j := 2; j+1 < len(args); j++ {
				switch args[j] {
				case "--comment":
					j++ // its value is free text, never an option
					continue
				case "-j", "-g", "--jump", "--goto":
					r.target = args[j+1]
				default:
					continue
				}
				break
			}
			st.rules = append(st.rules, r)
		default:
			return natState{}, fmt.Errorf("line %d: unexpected line in nat table: %q", i+1, line)
		}
	}
	return st, nil
}

// splitArgs splits a saved rule into arguments as iptables-restore does:
// on blanks, with double quotes grouping and, inside them, a backslash
// escaping the next character (iptables-save escapes " and \ that way in
// comments).
func splitArgs(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inArg   bool
		quoted  bool
		escaped bool
	)
	for _, c := range line {
		switch {
		case escaped:
			cur.WriteRune(c)
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
			inArg = true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(c)
			inArg = true
		}
	}
	if quoted || escaped {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

// cleanText returns the restore text that removes everything meshd owns
// from st: each rule of another chain that jumps into a MESHD_ chain
// (deleted by its saved spec), then every MESHD_ chain, flushed before any
// is deleted because they refer to each other. It returns "" when there is
// nothing to remove.
func cleanText(st natState) string {
	var b strings.Builder
	for _, r := range st.rules {
		if isOwnChain(r.chain) || !isOwnChain(r.target) {
			continue
		}
		// The saved line is "-A CHAIN spec"; the same spec deletes it.
		b.WriteString("-D")
		b.WriteString(strings.TrimPrefix(r.line, "-A"))
		b.WriteByte('\n')
	}
	var own []string
	for _, c := range st.chains {
		if isOwnChain(c) {
			own = append(own, c)
		}
	}
	for _, c := range own {
		fmt.Fprintf(&b, "-F %s\n", c)
	}
	for _, c := range own {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	if b.Len() == 0 {
		return ""
	}
	return "*nat\n" + b.String() + "COMMIT\n"
}

func isOwnChain(name string) bool { return strings.HasPrefix(name, chainPrefix) }
