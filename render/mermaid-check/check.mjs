#!/usr/bin/env node
// Checks Mermaid files with the real Mermaid, in headless Chromium: each
// file's text goes through mermaid.parse and mermaid.render, and one line is
// printed per file, "OK <file>" or "ERROR <file>: <message>". Exits 1 if any
// file failed, 2 on a usage or setup error.
//
//   node check.mjs [--out DIR] [--json] FILE.mmd...
//
// --out DIR  also writes a PNG screenshot of each rendered diagram to DIR
//            (named after the file), for people to look at.
// --json     prints one JSON object per file instead, with the drawn text
//            ({"file", "ok", "error", "type", "texts", "clipped"}), for tests
//            that check what Mermaid drew.
//
// Text drawn past the diagram's edge, which viewers cut off, is reported
// ("WARN <file>: ..." lines, "clipped" in JSON) but is no error: how wide text
// is depends on the fonts installed.
//
// Mermaid comes from node_modules (npm ci here), Chromium from Debian
// (/usr/bin/chromium, or $CHROMIUM). The page is built in memory and every
// request it makes is refused: nothing is fetched.
import { chromium } from 'playwright-core';
import { readFile, mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const usage = 'usage: node check.mjs [--out DIR] [--json] FILE.mmd...';
let outDir = '';
let json = false;
const files = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--out') {
    outDir = argv[++i] ?? '';
    if (!outDir) fail(usage);
  } else if (a === '--json') {
    json = true;
  } else if (a === '-h' || a === '--help') {
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
  console.error(`mermaid-check: ${msg}`);
  process.exit(2);
}

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
let mermaidJS;
try {
  mermaidJS = require.resolve('mermaid/dist/mermaid.min.js');
} catch {
  fail(`mermaid not installed: run npm ci in ${here}`);
}
const { version: mermaidVersion } = JSON.parse(
  await readFile(join(dirname(mermaidJS), '..', 'package.json'), 'utf8'));

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const profile = await mkdtemp(join(tmpdir(), 'mermaid-check-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    chromiumSandbox: false,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1600, height: 1000 },
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
  const blocked = [];
  await page.route('**/*', (route) => {
    blocked.push(route.request().url());
    return route.abort();
  });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.setContent('<!doctype html><html><head><meta charset="utf-8"></head>' +
    '<body style="margin:0;background:#fff"><div id="out" style="display:inline-block;padding:8px"></div></body></html>');
  await page.addScriptTag({ path: mermaidJS });
  await page.evaluate(() => {
    // Mermaid's defaults (securityLevel strict, maxTextSize 50000), as a
    // viewer such as GitHub's or mermaid.live would use them.
    window.mermaid.initialize({ startOnLoad: false });
  });
  if (outDir) await mkdir(outDir, { recursive: true });
  const shots = new Set();

  for (const [i, file] of files.entries()) {
    const res = { file, ok: false, error: '', type: '', texts: [], clipped: [] };
    try {
      const text = await readFile(file, 'utf8');
      pageErrors.length = 0;
      blocked.length = 0;
      const r = await page.evaluate(async ({ text, id }) => {
        const out = document.getElementById('out');
        out.innerHTML = '';
        try {
          const parsed = await window.mermaid.parse(text);
          const { svg } = await window.mermaid.render(id, text);
          out.innerHTML = svg;
          // Mermaid scales the drawing to the page (useMaxWidth): show it at
          // its own size instead.
          const el = out.querySelector('svg');
          const vb = el && el.viewBox && el.viewBox.baseVal;
          if (vb && vb.width) {
            el.style.maxWidth = 'none';
            el.setAttribute('width', String(vb.width));
            el.setAttribute('height', String(vb.height));
          }
          const texts = [...out.querySelectorAll('text, tspan, foreignObject')]
            .filter((e) => !e.querySelector('tspan'))
            .map((e) => e.textContent);
          // Text that sticks out of the drawing is cut off by every viewer
          // (Mermaid does not widen the diagram for its title, for one).
          const clipped = [];
          if (vb && vb.width) {
            for (const t of el.querySelectorAll('text')) {
              const bb = t.getBBox();
              if (bb.width && (bb.x < vb.x - 1 || bb.x + bb.width > vb.x + vb.width + 1)) {
                clipped.push(`${Math.ceil(Math.max(vb.x - bb.x, bb.x + bb.width - vb.x - vb.width))}px of "${t.textContent}"`);
              }
            }
          }
          return { type: parsed.diagramType, texts, clipped };
        } catch (e) {
          // Mermaid may leave its error drawing behind.
          document.querySelectorAll(`#d${id}, #${id}`).forEach((e) => e.remove());
          return { error: String(e && (e.message || e.str || e)) };
        }
      }, { text, id: `m${i}` });
      if (r.error) {
        res.error = r.error;
      } else if (r.type !== 'sequence') {
        res.error = `not a sequence diagram: Mermaid read it as "${r.type}"`;
      } else if (pageErrors.length) {
        res.error = `page error: ${pageErrors.join('; ')}`;
      } else if (blocked.length) {
        res.error = `the diagram made the page fetch ${blocked.join(', ')}`;
      } else {
        res.ok = true;
        res.type = r.type;
        res.texts = r.texts;
        res.clipped = r.clipped;
        if (outDir) {
          // Name it after the file, or its whole path if the name is taken.
          let name = basename(file).replace(/\.mmd$/, '');
          if (shots.has(name)) name = file.replace(/\.mmd$/, '').replace(/^[./\\]+/, '').replace(/[/\\]/g, '_');
          shots.add(name);
          const png = join(outDir, name + '.png');
          await page.locator('#out').screenshot({ path: png });
        }
      }
    } catch (e) {
      res.error = e.message.split('\n')[0];
    }
    if (!res.ok) failed++;
    if (json) {
      console.log(JSON.stringify(res));
    } else if (res.ok) {
      console.log(`OK ${file}`);
      for (const c of res.clipped) console.log(`WARN ${file}: text cut off at the diagram's edge (fonts vary): ${c}`);
    } else {
      console.log(`ERROR ${file}: ${res.error.replace(/\s*\n\s*/g, ' | ')}`);
    }
  }
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
console.error(`mermaid-check: mermaid ${mermaidVersion}: ${files.length - failed} OK, ${failed} failed`);
process.exit(failed ? 1 : 0);
