package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/criseq/criseq/decode"
	"github.com/criseq/criseq/flow"
	"github.com/criseq/criseq/internal/termtext"
)

const diffUsage = `Usage: criseq diff [flags] SPEC_A SPEC_B
       criseq diff [flags] FILE --pod POD_A --pod POD_B

Compares two pod flows side by side: how long each took (until the pod was
running, or down), the time of each phase (sandbox, pull, create, start…),
and the calls only one of them made, e.g. the PullImage of a cold start that
a warm start did without. Δ is B minus A.

A SPEC picks one flow of a capture:

  FILE[:POD][@KIND][#N]

  FILE    a capture file (pcap or pcapng); - reads standard input (after
          --, as in diff -- -@start -@stop, when the SPEC starts with -)
  :POD    the pod, NAMESPACE/NAME or NAME (default: --pod, else any pod)
  @KIND   start, restart or stop (default: --kind)
  #N      the Nth such flow in the capture, from 1 (default 1): a pod
          started twice, or "the second pod started"

--pod given once applies to both sides; given twice, the first is A's and
the second B's, so one FILE is enough for two pods of one capture.

Calls are matched in order by service and method (and by argument, such as
the container name, when both flows made that call with it); the ones left
over are listed per side, with their argument and time.

Examples:
  criseq diff cold.pcapng warm.pcapng                 # first pod start of each
  criseq diff --pod nginx before.pcapng after.pcapng  # the same pod in two captures
  criseq diff cri.pcapng --pod default/a --pod default/b
  criseq diff cri.pcapng:web#1 cri.pcapng:web#2        # first and second start of web
  criseq diff cri.pcapng@start cri.pcapng@stop        # the first pod's start and stop
  criseq diff --kind stop --format md a.pcapng b.pcapng >> "$GITHUB_STEP_SUMMARY"
  criseq diff --json a.pcapng b.pcapng | jq .only_a
`

// diffSpec is one side of a diff: which flow of which file.
type diffSpec struct {
	raw  string
	file string
	pod  string    // "" = any pod
	kind flow.Kind // start unless @stop or --kind stop
	n    int       // 1-based
	// set by the spec itself (they win over the flags)
	podSet, kindSet bool
}

// stringList is a flag that may be given more than once.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func runDiff(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("diff", diffUsage, stderr)
	var pods stringList
	fs.Var(&pods, "pod", "the pod of both flows (NAMESPACE/NAME or NAME); given twice: A's, then B's")
	kind := fs.String("kind", "start", "which flows to compare: start, restart or stop")
	format := fs.String("format", "text", "output format: text, md (a Markdown table) or json")
	asJSON := fs.Bool("json", false, "print JSON (same as --format json)")
	all := fs.Bool("all", false, "keep kubelet's periodic calls (List*, Status, Version, ImageFsInfo, stats) in the flows")
	var lists listStreaming
	registerListStreaming(fs, &lists)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	usageErr := func(format string, a ...any) error {
		fs.Usage()
		return fmt.Errorf("%w: diff: "+format, append([]any{errUsage}, a...)...)
	}
	if *asJSON {
		*format = "json"
	}
	switch *format {
	case "text", "md", "json":
	default:
		return usageErr("unknown --format %q (valid: text, md, json)", *format)
	}
	k, ok := parseKind(*kind)
	if !ok {
		return usageErr("--kind is %q, want start, restart or stop", *kind)
	}
	if len(pods) > 2 {
		return usageErr("--pod given %d times, at most twice (A's, then B's)", len(pods))
	}
	switch {
	case len(pos) == 1 && len(pods) == 2:
		pos = append(pos, pos[0])
	case len(pos) == 1:
		return usageErr("one SPEC given; compare two (A B), or one FILE with --pod twice")
	case len(pos) != 2:
		return usageErr("want two SPECs (FILE[:POD][@KIND][#N]), got %d arguments", len(pos))
	}
	var specs [2]diffSpec
	for i, arg := range pos {
		s, err := parseDiffSpec(arg, fileExists)
		if err != nil {
			return usageErr("%v", err)
		}
		if !s.podSet {
			switch len(pods) {
			case 1:
				s.pod = pods[0]
			case 2:
				s.pod = pods[i]
			}
		}
		if !s.kindSet {
			s.kind = k
		}
		specs[i] = s
	}

	// Load each file once, even when both sides come from it.
	type loaded struct {
		flows []*flow.Flow
		calls int
	}
	cache := map[string]loaded{}
	var sides [2]diffSide
	for i, s := range specs {
		l, ok := cache[s.file]
		if !ok {
			var err error
			l.flows, l.calls, err = diffFlows(s.file, specs[:], *all, lists, stderr)
			if err != nil {
				return fmt.Errorf("diff: %w", err)
			}
			cache[s.file] = l
		}
		f, err := pickFlow(s, l.flows, l.calls)
		if err != nil {
			return err
		}
		sides[i] = diffSide{spec: s, f: f}
	}
	d := &flowDiff{Comparison: flow.Compare(sides[0].f, sides[1].f), a: sides[0], b: sides[1]}
	bw := bufio.NewWriter(stdout)
	switch *format {
	case "md":
		d.writeMarkdown(bw)
	case "json":
		b, err := json.MarshalIndent(d.json(), "", "  ")
		if err != nil {
			return err
		}
		bw.Write(termtext.JSON(append(b, '\n')))
	default:
		d.writeText(bw)
	}
	return bw.Flush()
}

func parseKind(s string) (flow.Kind, bool) {
	switch s {
	case "start":
		return flow.Start, true
	case "stop":
		return flow.Stop, true
	case "restart":
		return flow.Restart, true
	}
	return 0, false
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// parseDiffSpec parses FILE[:POD][@KIND][#N]. A whole argument that names
// an existing file is that file; otherwise FILE ends at the first ':', '@'
// or '#' after which an existing file's name stops (or at the first of
// them, for a file that does not exist: loading it then says so).
func parseDiffSpec(arg string, exists func(string) bool) (diffSpec, error) {
	s := diffSpec{raw: arg, file: arg, n: 1}
	if arg == "" {
		return s, fmt.Errorf("empty SPEC")
	}
	if exists(arg) {
		return s, nil
	}
	cut := -1
	for i, r := range arg {
		if r == ':' || r == '@' || r == '#' {
			if cut < 0 {
				cut = i
			}
			if exists(arg[:i]) {
				cut = i
				break
			}
		}
	}
	if cut < 0 {
		return s, nil
	}
	s.file = arg[:cut]
	if s.file == "" {
		return s, fmt.Errorf("SPEC %q has no FILE (want FILE[:POD][@KIND][#N])", arg)
	}
	rest := arg[cut:]
	bad := func(why string) (diffSpec, error) {
		return s, fmt.Errorf("SPEC %q: %s (want FILE[:POD][@KIND][#N], e.g. cri.pcapng:default/nginx@stop#2)", arg, why)
	}
	// next returns the text after the sigil up to the next of later sigils.
	next := func(sigil byte, later string) (string, bool) {
		if rest == "" || rest[0] != sigil {
			return "", false
		}
		v := rest[1:]
		if i := strings.IndexAny(v, later); i >= 0 {
			v = v[:i]
		}
		rest = rest[1+len(v):]
		return v, true
	}
	if v, ok := next(':', "@#"); ok {
		if v == "" {
			return bad("empty POD after ':'")
		}
		s.pod, s.podSet = v, true
	}
	if v, ok := next('@', ":#"); ok {
		k, ok := parseKind(v)
		if !ok {
			return bad(fmt.Sprintf("KIND %q after '@' is not start, restart or stop", v))
		}
		s.kind, s.kindSet = k, true
	}
	if v, ok := next('#', ":@"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return bad(fmt.Sprintf("N %q after '#' is not a number from 1", v))
		}
		s.n = n
	}
	if rest != "" {
		return bad(fmt.Sprintf("cannot read %q (the parts go in the order :POD @KIND #N)", rest))
	}
	return s, nil
}

// diffFlows reads the flows of file as a stream and keeps whole only those
// the specs on it may pick (each spec's matches up to its #N); of the
// others it keeps what pickFlow lists (pod, kind, start), so memory does
// not follow the length of the capture.
func diffFlows(file string, specs []diffSpec, all bool, lists listStreaming, stderr io.Writer) ([]*flow.Flow, int, error) {
	var flows []*flow.Flow
	var last time.Time
	matched := make([]int, len(specs))
	// Only a flow some spec may pick is held whole.
	mayPick := func(f *flow.Flow) bool {
		for _, s := range specs {
			if s.picks(file, f) {
				return true
			}
		}
		return false
	}
	calls, err := streamFlows(file, decode.Options{SkipResponseMaps: true, RequestHeader: flow.ReadsHeader, Fields: flow.ReadsFields, ListsAbove: listsByItemsAbove}, lists, flow.Options{All: all, DropLists: true}, stderr, mayPick, func(f *flow.Flow) error {
		// A flow handed out late may sort before the ones above it: kept
		// whole, whichever #N it turns out to be. A flow in order has
		// every match handed out before it sort before it, so its #N is
		// at most its count.
		late := f.Start.Before(last)
		if !late {
			last = f.Start
		}
		keep := false
		for i, s := range specs {
			if s.picks(file, f) {
				matched[i]++
				keep = keep || late || matched[i] <= s.n
			}
		}
		if !keep {
			f = &flow.Flow{Kind: f.Kind, Pod: f.Pod, Start: f.Start}
		}
		flows = append(flows, f)
		return nil
	})
	if err != nil {
		return nil, calls, err
	}
	flow.Sort(flows) // flows handed out late
	return flows, calls, nil
}

// picks says whether s may pick f, a flow of file: its kind and pod.
func (s diffSpec) picks(file string, f *flow.Flow) bool {
	return s.file == file && f.Kind == s.kind && ofPod(f, s.pod)
}

// pickFlow finds the flow a spec names, or says which flows the file has.
func pickFlow(s diffSpec, flows []*flow.Flow, calls int) (*flow.Flow, error) {
	var match []*flow.Flow
	for _, f := range filterPod(flows, s.pod) {
		if f.Kind == s.kind {
			match = append(match, f)
		}
	}
	if s.n <= len(match) {
		return match[s.n-1], nil
	}
	if len(flows) == 0 {
		return nil, fmt.Errorf("diff: %s has no pod start or stop (%d calls); try criseq calls %s", s.file, calls, s.file)
	}
	what := "no " + s.kind.String() + " flow"
	if s.pod != "" {
		what += " of pod " + s.pod
	}
	if s.n > 1 && len(match) > 0 {
		what = fmt.Sprintf("only %d %s flow(s)", len(match), s.kind)
		if s.pod != "" {
			what += " of pod " + s.pod
		}
		what += fmt.Sprintf(", not #%d", s.n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "diff: %s has %s; its flows:", s.file, what)
	seen := map[string]int{}
	for _, f := range flows {
		spec := s.file + ":" + f.Pod.String()
		if f.Kind != flow.Start {
			spec += "@" + f.Kind.String()
		}
		seen[spec]++
		if n := seen[spec]; n > 1 {
			spec += "#" + strconv.Itoa(n)
		}
		fmt.Fprintf(&b, "\n  %-32s %-7s %s", termtext.String(f.Pod.String()), f.Kind, termtext.String(spec))
	}
	return nil, fmt.Errorf("%s", b.String())
}

// diffSide is one flow being compared.
type diffSide struct {
	spec diffSpec
	f    *flow.Flow
}

type flowDiff struct {
	*flow.Comparison
	a, b diffSide
}

func callName(c *flow.Unmatched) string {
	s := c.Step.Method + "(" + c.Step.Arg + ")"
	if c.Count > 1 {
		s += " ×" + strconv.Itoa(c.Count)
	}
	if c.Step.Err != "" {
		s += " ✗ " + flow.ErrCode(c.Step.Err)
	}
	s = termtext.String(s)
	return s
}

func fmtTotal(f *flow.Flow) string {
	s := fmtDuration(f.Duration())
	if !f.Complete {
		s += " (incomplete)"
	}
	return s
}

func fmtMaybe(d *time.Duration) string {
	if d == nil {
		return "—"
	}
	return fmtDuration(*d)
}

// fmtDelta is B−A with its sign: "+27ms", "−21ms", "±0".
func fmtDelta(a, b *time.Duration) string {
	switch {
	case a == nil && b == nil:
		return ""
	case b == nil:
		return "only A"
	case a == nil:
		return "only B"
	}
	return signed(shown(*b)-shown(*a), fmtDuration)
}

// shown is a duration as fmtDuration prints it, so that a Δ adds up with
// the two values beside it (28ms − 16ms is +12ms, not the exact +11ms).
func shown(d time.Duration) time.Duration {
	r, err := time.ParseDuration(fmtDuration(d))
	if err != nil {
		return d
	}
	return r
}

func signed(d time.Duration, f func(time.Duration) string) string {
	switch {
	case d > 0:
		return "+" + f(d)
	case d < 0:
		return "−" + f(-d)
	}
	return "±0"
}

func countDelta(a, b int) string {
	return signed(time.Duration(b-a), func(d time.Duration) string { return strconv.Itoa(int(d)) })
}

func failed(f *flow.Flow) int {
	n := 0
	for _, s := range f.Steps {
		if s.Err != "" {
			n++
		}
	}
	return n
}

// describe is a side's legend: pod, kind, file, client and runtime.
func (s diffSide) describe() string {
	var extra []string
	if s.f.Client != "" {
		extra = append(extra, s.f.Client)
	}
	if s.f.Runtime != "" {
		extra = append(extra, s.f.Runtime)
	}
	extra = append(extra, "at "+s.f.Start.UTC().Format("15:04:05.000")+" UTC")
	return termtext.String(fmt.Sprintf("%s %s, %s (%s)", s.f.Pod, s.f.Kind, s.spec.file, strings.Join(extra, ", ")))
}

// rows is the table both text formats print: label, A, B, Δ.
func (d *flowDiff) rows() [][4]string {
	a, b := d.a.f, d.b.f
	da, db := a.Duration(), b.Duration()
	rows := [][4]string{{d.Total, fmtTotal(a), fmtTotal(b), fmtDelta(&da, &db)}}
	for _, p := range d.Phases {
		rows = append(rows, [4]string{p.Label, fmtMaybe(p.A), fmtMaybe(p.B), fmtDelta(p.A, p.B)})
	}
	rows = append(rows, [4]string{"calls", strconv.Itoa(len(a.Steps)), strconv.Itoa(len(b.Steps)), countDelta(len(a.Steps), len(b.Steps))})
	if fa, fb := failed(a), failed(b); fa+fb > 0 {
		rows = append(rows, [4]string{"failed calls", strconv.Itoa(fa), strconv.Itoa(fb), countDelta(fa, fb)})
	}
	return rows
}

func (d *flowDiff) writeText(w io.Writer) {
	fmt.Fprintf(w, "A: %s\nB: %s\n\n", d.a.describe(), d.b.describe())
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "\tA\tB\tΔ")
	for _, r := range d.rows() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r[0], r[1], r[2], r[3])
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, side := range []struct {
		name  string
		calls []*flow.Unmatched
	}{{"A", d.OnlyA}, {"B", d.OnlyB}} {
		prefix := "only in " + side.name + ": "
		if len(side.calls) == 0 {
			fmt.Fprintln(w, prefix+"—")
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for i, c := range side.calls {
			p := strings.Repeat(" ", len(prefix))
			if i == 0 {
				p = prefix
			}
			fmt.Fprintf(tw, "%s%s\t%s\n", p, callName(c), fmtDuration(c.Total))
		}
		tw.Flush()
	}
}

// mdCell escapes text for a Markdown table cell: the punctuation that
// makes inline markup (emphasis from the "_" of an image name, links,
// images, HTML, strikethrough from a "~" of a runtime version) shows as
// itself, so wire text cannot change a CI summary's page.
func mdCell(s string) string { return mdEscaper.Replace(s) }

var mdEscaper = strings.NewReplacer(
	`\`, `\\`, "`", "\\`", `*`, `\*`, `_`, `\_`, `[`, `\[`, `]`, `\]`,
	`<`, `\<`, `>`, `\>`, `!`, `\!`, `|`, `\|`, `~`, `\~`, `&`, `\&`)

func (d *flowDiff) writeMarkdown(w io.Writer) {
	fmt.Fprintf(w, "**A**: %s  \n**B**: %s\n\n", mdCell(d.a.describe()), mdCell(d.b.describe()))
	fmt.Fprintln(w, "| | A | B | Δ |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	for _, r := range d.rows() {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", mdCell(r[0]), mdCell(r[1]), mdCell(r[2]), mdCell(r[3]))
	}
	for _, side := range []struct {
		name  string
		calls []*flow.Unmatched
	}{{"A", d.OnlyA}, {"B", d.OnlyB}} {
		if len(side.calls) == 0 {
			fmt.Fprintf(w, "\n**Only in %s**: none\n", side.name)
			continue
		}
		fmt.Fprintf(w, "\n**Only in %s**\n\n", side.name)
		for _, c := range side.calls {
			fmt.Fprintf(w, "- `%s` %s\n", strings.ReplaceAll(callName(c), "`", "'"), fmtDuration(c.Total))
		}
	}
}

// JSON output.

type jsonDiff struct {
	A      jsonDiffFlow    `json:"a"`
	B      jsonDiffFlow    `json:"b"`
	Phases []jsonDiffPhase `json:"phases"`
	OnlyA  []jsonDiffCall  `json:"only_a"`
	OnlyB  []jsonDiffCall  `json:"only_b"`
}

type jsonDiffFlow struct {
	File       string  `json:"file"`
	Pod        string  `json:"pod"`
	Kind       string  `json:"kind"`
	Client     string  `json:"client,omitempty"`
	Runtime    string  `json:"runtime,omitempty"`
	Start      string  `json:"start"`
	Complete   bool    `json:"complete"`
	DurationMS float64 `json:"duration_ms"`
	Calls      int     `json:"calls"`
	Failed     int     `json:"failed_calls"`
}

type jsonDiffPhase struct {
	Phase   string   `json:"phase"`
	Wait    bool     `json:"wait,omitempty"`
	AMS     *float64 `json:"a_ms"`
	BMS     *float64 `json:"b_ms"`
	DeltaMS *float64 `json:"delta_ms"`
}

type jsonDiffCall struct {
	Service    string  `json:"service"`
	Method     string  `json:"method"`
	Arg        string  `json:"arg,omitempty"`
	Result     string  `json:"result,omitempty"`
	Error      string  `json:"error,omitempty"`
	Count      int     `json:"count"`
	DurationMS float64 `json:"duration_ms"`
}

func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

func msPtr(d *time.Duration) *float64 {
	if d == nil {
		return nil
	}
	v := ms(*d)
	return &v
}

func (d *flowDiff) json() jsonDiff {
	side := func(s diffSide) jsonDiffFlow {
		return jsonDiffFlow{
			File: s.spec.file, Pod: s.f.Pod.String(), Kind: s.f.Kind.String(),
			Client: s.f.Client, Runtime: s.f.Runtime, Start: s.f.Start.UTC().Format(time.RFC3339Nano),
			Complete: s.f.Complete, DurationMS: ms(s.f.Duration()), Calls: len(s.f.Steps), Failed: failed(s.f),
		}
	}
	calls := func(cs []*flow.Unmatched) []jsonDiffCall {
		out := []jsonDiffCall{}
		for _, c := range cs {
			out = append(out, jsonDiffCall{
				Service: c.Step.Service, Method: c.Step.Method, Arg: c.Step.Arg, Result: c.Step.Result,
				Error: c.Step.Err, Count: c.Count, DurationMS: ms(c.Total),
			})
		}
		return out
	}
	j := jsonDiff{A: side(d.a), B: side(d.b), Phases: []jsonDiffPhase{}, OnlyA: calls(d.OnlyA), OnlyB: calls(d.OnlyB)}
	da, db := d.a.f.Duration(), d.b.f.Duration()
	rows := append([]flow.PhaseTimes{{Label: "total", A: &da, B: &db}}, d.Phases...)
	for _, p := range rows {
		jp := jsonDiffPhase{Phase: p.Label, Wait: p.Wait, AMS: msPtr(p.A), BMS: msPtr(p.B)}
		if p.A != nil && p.B != nil {
			delta := *p.B - *p.A
			jp.DeltaMS = msPtr(&delta)
		}
		j.Phases = append(j.Phases, jp)
	}
	return j
}
