// Opens every page of the built book in headless Chromium, offline, and fails on what a
// reader would see broken:
//   - a console error, an uncaught exception, a failed or blocked request;
//   - a KaTeX error node (`.katex-error`), or a KaTeX font that failed or never loaded;
//   - an image that does not decode;
//   - a link that leaves the book, or an internal link or #anchor that does not resolve;
//   - raw TeX left in the text (`$`, `\frac`, `\bar`, ... outside code and math).
// Then saves screenshots of chapter 5, chapter 6 and a reading guide.
//
// Usage: node browser-check.js BOOK_DIR SCREENSHOT_DIR
// (PLAYWRIGHT_CORE names the playwright-core folder; Chromium is Debian's /usr/bin/chromium.)
'use strict';

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const [bookDir, shotDir] = process.argv.slice(2).map((p) => path.resolve(p));
const SOURCE_DIR = 'source/';
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.css': 'text/css', '.js': 'text/javascript',
  '.json': 'application/json', '.png': 'image/png', '.svg': 'image/svg+xml',
  '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf', '.ico': 'image/x-icon',
};

function bookFiles(dir, prefix = '') {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? bookFiles(path.join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`]);
}

// The book is served from loopback only; the browser is told every other host does not exist.
function serve() {
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname).replace(/^\/+/, '');
    let file = path.join(bookDir, rel);
    if (!file.startsWith(bookDir)) { res.writeHead(403).end(); return; }
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    if (!fs.existsSync(file)) { res.writeHead(404).end('not found'); return; }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const idCache = new Map();
function idsOf(rel) {
  if (!idCache.has(rel)) {
    const text = fs.readFileSync(path.join(bookDir, rel), 'utf8');
    idCache.set(rel, new Set([...text.matchAll(/\s(?:id|name)="([^"]*)"/g)].map((m) => m[1])));
  }
  return idCache.get(rel);
}

// Runs in the page: everything the check reads from the rendered DOM.
function inspectPage() {
  const skip = 'code, pre, script, style, .katex, .katex-display, noscript';
  const raw = [];
  const main = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest(skip)) continue;
    const m = n.textContent.match(/\$|\\(frac|sqrt|bar|tilde|epsilon|theta|alpha|beta|mathbb|mathcal|mid|log|sum)\b/);
    if (m) raw.push(`${m[0]} in "${n.textContent.trim().slice(0, 80)}"`);
  }
  const faces = [...document.fonts].filter((f) => f.family.replace(/"/g, '').startsWith('KaTeX'));
  return {
    katex: document.querySelectorAll('.katex').length,
    katexErrors: document.querySelectorAll('.katex-error').length,
    fontsLoaded: faces.filter((f) => f.status === 'loaded').map((f) => f.family.replace(/"/g, '')),
    fontsFailed: faces.filter((f) => f.status === 'error').map((f) => f.family.replace(/"/g, '')),
    usesMathItalic: document.querySelector('.katex .mathnormal') !== null,
    images: [...document.images].map((i) => ({ src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0 })),
    links: [...document.querySelectorAll('a[href], link[href], script[src], img[src], iframe[src]')]
      .map((e) => e.href || e.src),
    raw,
  };
}

async function main() {
  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'book-check-'));
  const context = await chromium.launchPersistentContext(userData, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  });
  const problems = [];
  let blocked = 0;
  await context.route('**/*', (route) => {
    if (route.request().url().startsWith(origin + '/')) return route.continue();
    blocked += 1;
    problems.push(`blocked request to ${route.request().url()}`);
    return route.abort();
  });

  const pages = bookFiles(bookDir).filter((f) => f.endsWith('.html') && !f.startsWith(SOURCE_DIR)).sort();
  const screenshots = {
    '05-the-bound.html': ['chapter-05.png', 'Rewriting'],
    '06-noise-prediction.html': ['chapter-06.png', 'A network that predicts the noise'],
    'guides/note-000.ko.html': ['guide-note-000-ko.png', null],
  };
  fs.mkdirSync(shotDir, { recursive: true });
  let equations = 0;
  let linksChecked = 0;
  for (const rel of pages) {
    const page = await context.newPage();
    const say = (msg) => problems.push(`${rel}: ${msg}`);
    page.on('console', (m) => { if (m.type() === 'error') say(`console error: ${m.text()}`); });
    page.on('pageerror', (e) => say(`uncaught: ${e.message}`));
    page.on('requestfailed', (r) => {
      if (r.url().startsWith(origin)) say(`request failed: ${r.url()} (${r.failure().errorText})`);
    });
    page.on('response', (r) => { if (r.status() >= 400) say(`HTTP ${r.status()} for ${r.url()}`); });
    // mdBook's print page opens the print dialog on load; the check only reads it
    if (rel === 'print.html') await page.addInitScript(() => { window.print = () => {}; });

    await page.goto(`${origin}/${rel}`, { waitUntil: 'load' });
    await page.evaluate(async () => {
      await document.fonts.ready;
      await Promise.all([...document.images].map((i) => i.decode().catch(() => {})));
    });
    const r = await page.evaluate(inspectPage);
    equations += rel === 'print.html' ? 0 : r.katex;
    if (r.katexErrors) say(`${r.katexErrors} KaTeX error nodes`);
    if (r.fontsFailed.length) say(`KaTeX fonts failed: ${r.fontsFailed.join(', ')}`);
    if (r.katex && !r.fontsLoaded.includes('KaTeX_Main')) say('KaTeX_Main font not loaded');
    if (r.usesMathItalic && !r.fontsLoaded.includes('KaTeX_Math')) say('KaTeX_Math font not loaded');
    for (const img of r.images) if (!img.ok) say(`image does not decode: ${img.src}`);
    for (const t of r.raw) say(`raw TeX: ${t}`);
    for (const href of r.links) {
      linksChecked += 1;
      const url = new URL(href);
      if (url.origin !== origin) { say(`link leaves the book: ${href}`); continue; }
      let target = decodeURIComponent(url.pathname).replace(/^\/+/, '') || 'index.html';
      if (target.endsWith('/')) target += 'index.html';
      if (!fs.existsSync(path.join(bookDir, target))) { say(`broken link: ${href}`); continue; }
      const anchor = decodeURIComponent(url.hash.slice(1));
      if (anchor && target.endsWith('.html') && !idsOf(target).has(anchor)) say(`no anchor #${anchor} in ${target}`);
    }
    if (screenshots[rel]) {
      const [file, heading] = screenshots[rel];
      if (heading) {
        const found = await page.evaluate((text) => {
          const h = [...document.querySelectorAll('main h2')].find((e) => e.textContent.includes(text));
          if (!h) return false;
          h.scrollIntoView({ block: 'start' });
          window.scrollBy(0, -60); // below mdBook's menu bar
          return true;
        }, heading);
        if (!found) say(`screenshot: no heading "${heading}"`);
        await page.waitForTimeout(300);
      }
      await page.screenshot({ path: path.join(shotDir, file) });
    }
    await page.close();
  }
  await context.close();
  server.close();
  fs.rmSync(userData, { recursive: true, force: true });

  console.log(`browser check: ${pages.length} pages opened in Chromium, ${equations} equations, `
    + `${linksChecked} links checked, ${blocked} requests blocked, ${problems.length} problems; `
    + `screenshots in ${path.relative(process.cwd(), shotDir) || shotDir}`);
  for (const p of problems) console.error('  ' + p);
  process.exit(problems.length ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
