package cse

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Router is a Provider that chooses the provider for a new object by key
// prefix, and reads with a list of providers.
//
// GenerateKey uses the rule whose Prefix is the longest prefix of
// KeyRequest.Key (byte-wise, so "fin" matches "finance/x"; end prefixes with
// "/" to match whole directories). The rule with Prefix "" is the default. No
// matching rule gives ErrNoMasterKey naming the key.
//
// DecryptKey tries the readers in order. It moves to the next reader only
// when one fails with ErrUnsupported (not its kind of wrap) or ErrNoMasterKey
// (its kind, but not its key); any other error (authentication, key access,
// context mismatch) is returned at once. When every reader declines, the
// error is the first ErrNoMasterKey one (it names the materials description
// that matched nothing), or else the first ErrUnsupported one. With no
// readers, the rules' providers are the readers, in rule order.
//
// Safe for concurrent use (immutable after construction).
type Router struct {
	rules   []Rule // sorted by descending prefix length
	readers []Provider
}

var _ Provider = (*Router)(nil)

// NewRouter builds a Router. Duplicate prefixes and nil providers give
// ErrMalformed.
func NewRouter(rules []Rule, readers ...Provider) (*Router, error) {
	r := &Router{rules: slices.Clone(rules)}
	seen := map[string]bool{}
	for i, rule := range r.rules {
		if rule.Provider == nil {
			return nil, fmt.Errorf("cse: router: rule %d (prefix %q) has no provider: %w", i, rule.Prefix, ErrMalformed)
		}
		if seen[rule.Prefix] {
			return nil, fmt.Errorf("cse: router: prefix %q has two rules: %w", rule.Prefix, ErrMalformed)
		}
		seen[rule.Prefix] = true
	}
	for i, p := range readers {
		if p == nil {
			return nil, fmt.Errorf("cse: router: reader %d is nil: %w", i, ErrMalformed)
		}
	}
	r.readers = slices.Clone(readers)
	if len(r.readers) == 0 {
		for _, rule := range r.rules {
			r.readers = append(r.readers, rule.Provider)
		}
	}
	slices.SortStableFunc(r.rules, func(a, b Rule) int { return len(b.Prefix) - len(a.Prefix) })
	return r, nil
}

// RuleFor returns the prefix of the rule that applies to key, and whether
// one does.
func (r *Router) RuleFor(key string) (prefix string, ok bool) {
	if rule := r.ruleFor(key); rule != nil {
		return rule.Prefix, true
	}
	return "", false
}

func (r *Router) ruleFor(key string) *Rule {
	for i := range r.rules { // longest first
		if strings.HasPrefix(key, r.rules[i].Prefix) {
			return &r.rules[i]
		}
	}
	return nil
}

// GenerateKey implements Provider.
func (r *Router) GenerateKey(ctx context.Context, req KeyRequest) ([]byte, WrappedKey, error) {
	rule := r.ruleFor(req.Key)
	if rule == nil {
		return nil, WrappedKey{}, fmt.Errorf("cse: no rule chooses a master key for %q and there is no default: %w", req.Key, ErrNoMasterKey)
	}
	return rule.Provider.GenerateKey(ctx, req)
}

// DecryptKey implements Provider.
func (r *Router) DecryptKey(ctx context.Context, w WrappedKey) ([]byte, error) {
	var noKey, unsupported error
	for _, p := range r.readers {
		key, err := p.DecryptKey(ctx, w)
		switch {
		case err == nil:
			return key, nil
		case errors.Is(err, ErrNoMasterKey):
			if noKey == nil {
				noKey = err
			}
		case errors.Is(err, ErrUnsupported):
			if unsupported == nil {
				unsupported = err
			}
		default:
			return nil, err
		}
	}
	if noKey != nil {
		return nil, noKey
	}
	if unsupported != nil {
		return nil, unsupported
	}
	return nil, fmt.Errorf("cse: no provider to unwrap the %q key with materials description %s: %w", w.WrapAlg, describe(w.MatDesc), ErrNoMasterKey)
}
