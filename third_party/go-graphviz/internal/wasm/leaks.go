package wasm

// Not in go-graphviz: added by update.sh. The generated bindings copy
// every string argument into the module's memory and never free it, nor
// the strings they hand back: the module's memory (which WebAssembly never
// gives back) grew with each graph drawn, by the DOT text and the SVG or
// PNG. These two are what drawing a graph calls for each graph.

import (
	"context"
	"io"
)

// MemReadFree is MemRead freeing its copy of the DOT text, which
// agmemread does not keep.
func MemReadFree(ctx context.Context, dot string) (*Graph, error) {
	m := module()
	arg, err := m.toStringWasmValue(ctx, dot)
	if err != nil {
		return nil, err
	}
	defer m.free(ctx, arg)
	p, err := m.callWithRet(ctx, "memRead", arg)
	if err != nil {
		return nil, err
	}
	return newGraph(p), nil
}

// RenderDataTo is RenderData writing the rendered bytes to w, then freeing
// them (gvFreeRenderData is free), the string header the bridge made for
// them, the format's copy and the two result cells.
func (v *Context) RenderDataTo(ctx context.Context, g *Graph, format string, w io.Writer) error {
	m := module()
	gp, err := m.toObjectWasmValue(ctx, g)
	if err != nil {
		return err
	}
	fp, err := m.toStringWasmValue(ctx, format)
	if err != nil {
		return err
	}
	defer m.free(ctx, fp)
	var cells [2]uint64 // the result, its length
	for i := range cells {
		if cells[i], err = m.NewPtr(ctx); err != nil {
			return err
		}
		defer m.free(ctx, cells[i])
		if err := m.writeU32(cells[i], 0); err != nil {
			return err
		}
	}
	if _, err := m.callWithRet(ctx, "Context_renderData", v.getPtr(), gp, fp, cells[0], cells[1]); err != nil {
		return err
	}
	hdr, err := m.readU32(cells[0]) // GoString{p, n}, malloc'd by the bridge
	if err != nil || hdr == 0 {
		return err
	}
	defer m.free(ctx, hdr)
	data, err := m.readU32(hdr)
	if err != nil {
		return err
	}
	n, err := m.readU32(hdr + 4)
	if err != nil {
		return err
	}
	if data == 0 {
		return nil
	}
	defer m.free(ctx, data)
	b, err := m.read(data, n)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
