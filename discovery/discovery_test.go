package discovery

import (
	"context"
	"errors"
	"testing"
)

type fixed map[string]*Snapshot

func (f fixed) Resolve(_ context.Context, name string) (*Snapshot, error) {
	if s, ok := f[name]; ok {
		return s, nil
	}
	return nil, ErrUnknownService
}

func TestStaticAndChain(t *testing.T) {
	st := NewStatic(map[string][]string{"Payments": {"10.0.0.1:80", "10.0.0.2:80"}, "empty": nil})
	other := fixed{"ledger": {Service: "ledger", Source: SourceConsul}, "payments": {Service: "payments", Source: SourceConsul}}
	ch := Chain{st, other}
	ctx := context.Background()

	cases := []struct {
		name      string
		source    Source
		endpoints int
		unknown   bool
	}{
		{"payments", SourceStatic, 2, false}, // the static list wins over the next resolver
		{"PAYMENTS", SourceStatic, 2, false},
		{"empty", SourceStatic, 0, false},
		{"ledger", SourceConsul, 0, false},
		{"nowhere", "", 0, true},
	}
	for _, tc := range cases {
		s, err := ch.Resolve(ctx, tc.name)
		if tc.unknown {
			if !errors.Is(err, ErrUnknownService) {
				t.Errorf("%s: got %v, want ErrUnknownService", tc.name, err)
			}
			continue
		}
		if err != nil || s.Source != tc.source || len(s.Endpoints) != tc.endpoints {
			t.Errorf("%s: got %+v, %v", tc.name, s, err)
		}
	}
	if len(st.Snapshots()) != 2 || len(ch.Snapshots()) != 2 {
		t.Errorf("Snapshots() = %d entries", len(st.Snapshots()))
	}
	s1, _ := st.Resolve(ctx, "payments")
	s2, _ := st.Resolve(ctx, "payments")
	if s1 != s2 || s1.Changed != nil {
		t.Errorf("a static snapshot must be stable and never change")
	}
}
