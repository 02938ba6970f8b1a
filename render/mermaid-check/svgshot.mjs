#!/usr/bin/env node
// Looks at criseq's plain SVG files the way a person would, in headless
// Chromium, and prints what it saw, one JSON object per file:
//
//   node svgshot.mjs FILE.svg...
//
// Each FILE.svg is opened from file:// in a viewport of the SVG's own width
// and height; once loaded (fonts included), a full-page screenshot is written
// next to it as FILE.chromium.png (the viewport grows if the page is larger
// than the SVG says), and the line printed holds:
//
//   {"file", "png", "root": the root element's name, "parseError": the XML
//    error Chromium showed instead of the drawing, "width", "height": the
//    size the <svg> was rendered at, "attrWidth", "attrHeight": its width
//    and height attributes, "pageWidth", "pageHeight": the whole page's
//    size (what a full-page screenshot shows), "texts": [{"text", "x", "y", "w", "h" (getBBox,
//    in SVG units), "cx", "cy", "cw", "ch" (getBoundingClientRect, in CSS
//    px), "len" (getComputedTextLength)}] for every <text> in document order,
//    "fonts": {family: glyphs} the fonts Chromium drew the text with,
//    "pageErrors", "consoleErrors", "blocked": requests refused, "error"}
//
// render/svg_tool_test.go reads these and decides what is wrong; this script
// only measures. Exits 2 on a usage or setup error, 1 if some file could not
// be opened or measured. Every request other than the file itself is refused
// (and listed in "blocked"): a criseq SVG must need nothing else.
//
// Chromium comes from Debian (/usr/bin/chromium, or $CHROMIUM).
import { chromium } from 'playwright-core';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const usage = 'usage: node svgshot.mjs FILE.svg...';
const files = [];
for (const a of process.argv.slice(2)) {
  if (a === '-h' || a === '--help') {
    console.log(usage);
    process.exit(0);
  } else if (a.startsWith('-')) {
    fail(`unknown flag ${a}\n${usage}`);
  } else {
    files.push(a);
  }
}
if (files.length === 0) fail(usage);

function fail(msg) {
  console.error(`svgshot: ${msg}`);
  process.exit(2);
}

// svgSize reads the width and height attributes of the file's <svg> element,
// to size the viewport before the page is opened.
function svgSize(text) {
  const m = /<svg\b[^>]*>/.exec(text);
  const attr = (name) => {
    const a = m && new RegExp(`\\s${name}="([0-9.]+)"`).exec(m[0]);
    return a ? Number(a[1]) : 0;
  };
  return { w: attr('width'), h: attr('height') };
}

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const profile = await mkdtemp(join(tmpdir(), 'svgshot-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    chromiumSandbox: false,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--hide-scrollbars', '--force-color-profile=srgb'],
    viewport: { width: 800, height: 600 },
    deviceScaleFactor: 1,
    offline: true,
    timeout: 60_000,
  });
} catch (e) {
  await rm(profile, { recursive: true, force: true });
  fail(`cannot start Chromium (${executablePath}): ${e.message.split('\n')[0]}`);
}

let failed = 0;
try {
  const page = context.pages()[0] ?? await context.newPage();
  const cdp = await context.newCDPSession(page);
  let url = '';
  const res = {};
  await page.route('**/*', (route) => {
    const u = route.request().url();
    if (u === url) return route.continue();
    res.blocked.push(u);
    return route.abort();
  });
  page.on('pageerror', (e) => res.pageErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') res.consoleErrors.push(m.text()); });

  for (const file of files) {
    Object.assign(res, { file, png: '', root: '', parseError: '', width: 0, height: 0, attrWidth: 0,
      attrHeight: 0, pageWidth: 0, pageHeight: 0, texts: [], fonts: {}, pageErrors: [], consoleErrors: [], blocked: [], error: '' });
    try {
      const { w, h } = svgSize(await readFile(file, 'utf8'));
      await page.setViewportSize({ width: Math.max(1, Math.ceil(w || 800)), height: Math.max(1, Math.ceil(h || 600)) });
      url = pathToFileURL(resolve(file)).href;
      await page.goto(url, { waitUntil: 'load' });
      const r = await page.evaluate(async () => {
        await document.fonts.ready;
        const root = document.documentElement;
        const perr = document.querySelector('parsererror');
        const rect = root.getBoundingClientRect();
        const texts = [...document.querySelectorAll('text')].map((t) => {
          const b = t.getBBox();
          const c = t.getBoundingClientRect();
          return { text: t.textContent, x: b.x, y: b.y, w: b.width, h: b.height,
            cx: c.x, cy: c.y, cw: c.width, ch: c.height, len: t.getComputedTextLength() };
        });
        return { root: root.localName, parseError: perr ? perr.textContent : '',
          width: rect.width, height: rect.height,
          attrWidth: Number(root.getAttribute('width')), attrHeight: Number(root.getAttribute('height')),
          texts };
      });
      Object.assign(res, r);
      res.fonts = await usedFonts(cdp);
      // The whole page: Playwright's fullPage option hangs on a document
      // that is not HTML, so the viewport grows to the content instead.
      const { cssContentSize: cs } = await cdp.send('Page.getLayoutMetrics');
      res.pageWidth = cs.width;
      res.pageHeight = cs.height;
      const vp = page.viewportSize();
      if (cs.width > vp.width || cs.height > vp.height) {
        await page.setViewportSize({ width: Math.max(vp.width, Math.ceil(cs.width)),
          height: Math.max(vp.height, Math.ceil(cs.height)) });
      }
      res.png = file.replace(/\.svg$/, '') + '.chromium.png';
      await page.screenshot({ path: res.png, animations: 'disabled', timeout: 30_000 });
    } catch (e) {
      res.error = e.message.split('\n')[0];
    }
    if (res.error) failed++;
    console.log(JSON.stringify(res));
  }
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

// usedFonts asks Chromium which fonts it drew the <text> elements with, and
// how many glyphs with each (DevTools' CSS.getPlatformFontsForNode).
async function usedFonts(cdp) {
  const fonts = {};
  await cdp.send('DOM.enable');
  await cdp.send('CSS.enable');
  const { root } = await cdp.send('DOM.getDocument', { depth: 0 });
  const { nodeIds } = await cdp.send('DOM.querySelectorAll', { nodeId: root.nodeId, selector: 'text' });
  for (const nodeId of nodeIds) {
    const { fonts: fs } = await cdp.send('CSS.getPlatformFontsForNode', { nodeId });
    for (const f of fs) fonts[f.familyName] = (fonts[f.familyName] || 0) + f.glyphCount;
  }
  await cdp.send('CSS.disable');
  await cdp.send('DOM.disable');
  return fonts;
}
