#!/usr/bin/env node
// Drives criseq's HTML viewer (render.HTML) in headless Chromium the way a
// person would, and prints what it saw as one JSON object:
//
//   node viewer.mjs [--out DIR] FILE.html
//
// It opens FILE.html from file://, clicks the first request arrow of the
// first flow, reads the detail panel, presses ArrowDown (next call), ArrowRight
// (next flow) and Escape (closes the panel). With --out DIR it saves a PNG at
// each step (viewer-1-open.png, viewer-2-click.png, viewer-3-down.png,
// viewer-4-next-flow.png, viewer-5-apart-reply.png) for people to look at.
// In the second flow it also clicks the reply arrow of a call whose request
// and reply are apart (other arrows between them) and reports "apart":
// {"step", "title", "selected"}. In the first flow that has the runtime's
// events it clicks the first event's arrow and reports "event": {"flow",
// "title", "text", "selected"} (viewer-6-event.png).
//
// Output: {"flows", "visible", "first": {"title", "text"}, "next": {...},
// "afterRight": {"visible", "panel"}, "afterEsc": {"panel"}, "blocked": [],
// "pageErrors": [], "shots": []}. Exits 2 on a usage or setup error, 1 if the
// page could not be driven. Every request other than the file itself is
// refused (and listed in "blocked"): the viewer must need no network.
//
// Chromium comes from Debian (/usr/bin/chromium, or $CHROMIUM).
import { chromium } from 'playwright-core';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const usage = 'usage: node viewer.mjs [--out DIR] FILE.html';
let outDir = '';
let file = '';
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--out') {
    outDir = argv[++i] ?? '';
    if (!outDir) fail(usage);
  } else if (a === '-h' || a === '--help') {
    console.log(usage);
    process.exit(0);
  } else if (a.startsWith('-') || file) {
    fail(`unexpected argument ${a}\n${usage}`);
  } else {
    file = a;
  }
}
if (!file) fail(usage);

function fail(msg) {
  console.error(`viewer-check: ${msg}`);
  process.exit(2);
}

const url = pathToFileURL(resolve(file)).href;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const profile = await mkdtemp(join(tmpdir(), 'viewer-check-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    chromiumSandbox: false,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 900 },
    offline: true,
    timeout: 60_000,
  });
} catch (e) {
  await rm(profile, { recursive: true, force: true });
  fail(`cannot start Chromium (${executablePath}): ${e.message.split('\n')[0]}`);
}

const res = { flows: 0, visible: -1, first: null, next: null, afterRight: null, afterEsc: null,
  blocked: [], pageErrors: [], consoleErrors: [], shots: [] };
let code = 0;
try {
  const page = context.pages()[0] ?? await context.newPage();
  await page.route('**/*', (route) => {
    const u = route.request().url();
    if (u === url || u.startsWith(url + '#')) return route.continue();
    res.blocked.push(u);
    return route.abort();
  });
  page.on('pageerror', (e) => res.pageErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') res.consoleErrors.push(m.text()); });
  if (outDir) await mkdir(outDir, { recursive: true });
  const shot = async (name) => {
    if (!outDir) return;
    const p = join(outDir, name);
    await page.screenshot({ path: p });
    res.shots.push(p);
  };
  const state = () => page.evaluate(() => {
    const views = [...document.querySelectorAll('#view .diagram')];
    const panel = document.getElementById('detail');
    return {
      flows: document.querySelectorAll('#flows .flow').length,
      visible: views.findIndex((v) => !v.hidden),
      panel: !panel.hidden,
      title: document.getElementById('d-title').textContent,
      text: document.getElementById('d-body').innerText,
      selected: [...document.querySelectorAll('#view .diagram:not([hidden]) .hit.sel[data-step]')]
        .map((h) => +h.getAttribute('data-step')),
      selectedEvents: [...document.querySelectorAll('#view .diagram:not([hidden]) .hit.sel[data-event]')]
        .map((h) => +h.getAttribute('data-event')),
    };
  });

  await page.goto(url, { waitUntil: 'load' });
  let s = await state();
  res.flows = s.flows;
  res.visible = s.visible;
  await shot('viewer-1-open.png');

  // Click the middle of the first request arrow, where a person would.
  const arrow = page.locator('#view .diagram:not([hidden]) line.req[data-step="0"]');
  const box = await arrow.boundingBox();
  if (!box) throw new Error('no request arrow with data-step="0" in the visible diagram');
  await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
  await page.waitForSelector('#detail:not([hidden])', { timeout: 5000 });
  s = await state();
  res.first = { title: s.title, text: s.text, selected: s.selected };
  await shot('viewer-2-click.png');

  await page.keyboard.press('ArrowDown');
  s = await state();
  res.next = { title: s.title, text: s.text, selected: s.selected };
  await shot('viewer-3-down.png');

  await page.keyboard.press('ArrowRight');
  s = await state();
  res.afterRight = { visible: s.visible, panel: s.panel };
  await page.keyboard.press('j');
  await shot('viewer-4-next-flow.png');

  // A call whose reply comes after other arrows has two click areas: click
  // its reply arrow, both light up and the panel shows that call.
  const step = await page.evaluate(() => {
    const n = {};
    for (const h of document.querySelectorAll('#view .diagram:not([hidden]) .hit')) {
      const k = h.getAttribute('data-step');
      n[k] = (n[k] || 0) + 1;
    }
    const k = Object.keys(n).find((k) => n[k] === 2);
    return k === undefined ? -1 : +k;
  });
  if (step >= 0) {
    const ret = page.locator(`#view .diagram:not([hidden]) line.ret[data-step="${step}"]`);
    await ret.scrollIntoViewIfNeeded();
    const rb = await ret.boundingBox();
    if (!rb) throw new Error(`no reply arrow with data-step="${step}"`);
    await page.mouse.click(rb.x + rb.width / 2, rb.y + rb.height / 2);
    s = await state();
    res.apart = { step, title: s.title, selected: s.selected };
    await shot('viewer-5-apart-reply.png');
  }

  await page.keyboard.press('Escape');
  s = await state();
  res.afterEsc = { panel: s.panel };

  // The runtime's events: click the first event arrow of the first flow
  // that has one.
  const withEvents = await page.evaluate(() =>
    [...document.querySelectorAll('#view .diagram')].findIndex((v) => v.querySelector('line.evl[data-event]')));
  if (withEvents >= 0) {
    await page.locator(`#flows .flow[data-flow="${withEvents}"]`).click();
    const ev = page.locator('#view .diagram:not([hidden]) line.evl[data-event="0"]');
    await ev.scrollIntoViewIfNeeded();
    const eb = await ev.boundingBox();
    if (!eb) throw new Error('no event arrow with data-event="0"');
    await page.mouse.click(eb.x + eb.width / 2, eb.y + eb.height / 2);
    s = await state();
    res.event = { flow: withEvents, title: s.title, text: s.text, selected: s.selectedEvents, calls: s.selected };
    await shot('viewer-6-event.png');
  }
} catch (e) {
  res.error = e.message.split('\n')[0];
  code = 1;
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(res));
process.exit(code);
