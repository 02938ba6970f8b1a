package flow

import "github.com/criseq/criseq/decode"

// Labeler labels calls one by one the way a diagram would, learning
// container names and pods from the calls it has seen.
type Labeler struct{ g *Grouper }

// NewLabeler returns a Labeler.
func NewLabeler(opts Options) *Labeler { return &Labeler{g: NewGrouper(opts)} }

// Label learns from c and describes it. Calls should come in start order.
func (l *Labeler) Label(c *decode.Call) Step {
	l.g.learn(c)
	s := l.g.step(c)
	l.g.forgetGone(c)
	return s
}
