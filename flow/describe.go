package flow

import "github.com/criseq/criseq/decode"

// Describe labels every call the way a diagram would, learning container
// names and pods from all the calls first.
func Describe(calls []*decode.Call, opts Options) []Step {
	g := NewGrouper(opts)
	for _, c := range calls {
		g.learn(c)
	}
	steps := make([]Step, len(calls))
	for i, c := range calls {
		steps[i] = g.step(c)
	}
	return steps
}
