// The operator panel (/ops) in a real browser: headless Chromium driven by
// Playwright against the real daemon. Started by tests/e2e/panel.rs, which
// seeds the database, starts the daemon and hands over:
//   BASE_URL        the daemon, e.g. http://127.0.0.1:41234
//   ADMIN_TOKEN     the admin token; READONLY_TOKEN the read-only one
//   SCREENSHOT_DIR  where ops-desktop.png and ops-phone.png go
//   SEED            the seeded jobs by role, as JSON (see panel.rs)
//   CHROMIUM        the browser (default /usr/bin/chromium)
//   PAGE_SHOTS      optional: a screenshot of every page audited goes there
// Prints one line per check ("ok - ..." / "not ok - ...") and a closing
// "N passed, N failed"; exits 1 when any check failed.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, request as http } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE = require.resolve('axe-core/axe.min.js');

const env = (k) => {
  const v = process.env[k];
  if (!v) {
    console.error(`panel.mjs: ${k} is not set (run through: cargo test -p clawcut-worker --test e2e panel::in_a_real_browser)`);
    process.exit(2);
  }
  return v;
};
const BASE = env('BASE_URL').replace(/\/$/, '');
const ADMIN = env('ADMIN_TOKEN');
const READONLY = env('READONLY_TOKEN');
const SHOTS = env('SCREENSHOT_DIR');
const SEED = JSON.parse(env('SEED'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Optional: a full-page screenshot of every audited page goes here.
const PAGE_SHOTS = process.env.PAGE_SHOTS || '';
const OPERATOR = SEED.operator || 'Olivia Operator';
const EVIL = 'http://evil.example';

// The whole run is bounded: a hung page must not hang CI.
const overall = setTimeout(() => {
  console.log('not ok - the run took longer than 240 s');
  process.exit(1);
}, 240_000);

const results = [];
let current = '';

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}
function eq(got, want, what) {
  if (got !== want) throw new Error(`${what}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
}

async function check(name, fn) {
  current = name;
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok - ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    const msg = String(e && e.message ? e.message : e).split('\n').slice(0, 6).join('\n    ');
    console.log(`not ok - ${name}\n    ${msg}`);
  }
}

const url = (p) => `${BASE}${p}`;
const pathOf = (u) => new URL(u).pathname;

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  // Playwright gives every launch a fresh temporary profile (user-data-dir).
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});

async function newContext(opts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...opts });
  ctx.setDefaultTimeout(15_000);
  ctx.setDefaultNavigationTimeout(20_000);
  return ctx;
}

/** Sign in through the form; the page ends on /ops. */
async function signIn(page, token, operator) {
  await page.goto(url('/ops/login'));
  await page.getByLabel('Token').fill(token);
  await page.getByLabel('Your name').fill(operator);
  await Promise.all([
    page.waitForURL((u) => pathOf(u.href) === '/ops'),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
}

/** Submit `form#confirm` (optionally with a reason) and wait for the redirect. */
async function confirm(page, { reason, landsOn } = {}) {
  const form = page.locator('form#confirm');
  await form.waitFor();
  if (reason !== undefined) await form.locator('textarea[name=reason]').fill(reason);
  await Promise.all([
    page.waitForURL((u) => landsOn(pathOf(u.href)), { timeout: 15_000 }),
    form.locator('button:not([type=button]):not([type=reset]), input[type=submit]').first().click(),
  ]);
}

/** The session's CSRF token, as rendered in a page's forms. */
async function csrfOf(page) {
  const v = await page
    .locator('input[type=hidden][name=csrf]')
    .first()
    .getAttribute('value', { timeout: 5_000 })
    .catch(() => null);
  assert(v, `no input[type=hidden][name=csrf] on ${page.url()}`);
  return v;
}

/** A same-origin form POST from the page (cookies and Origin as the browser sends them). */
async function pagePost(page, path, fields) {
  return page.evaluate(
    async ({ path, fields }) => {
      const r = await fetch(path, {
        method: 'POST',
        body: new URLSearchParams(fields),
        redirect: 'manual',
        credentials: 'same-origin',
      });
      // An accepted form answers 303: with redirect 'manual' that is an
      // opaque redirect, status 0.
      return r.type === 'opaqueredirect' ? 303 : r.status;
    },
    { path, fields },
  );
}

async function text(page, sel) {
  return (await page.locator(sel).first().innerText()).trim();
}
async function num(page, sel) {
  const t = await text(page, sel);
  const n = Number(t.replace(/[^\d.-]/g, ''));
  assert(t !== '' && Number.isFinite(n), `${sel} is not a number: ${JSON.stringify(t)}`);
  return n;
}

const mutating = (csrf) => [
  ['/ops/reconcile', { csrf }],
  [`/ops/jobs/${SEED.untouched}/reconcile`, { csrf }],
  [`/ops/jobs/${SEED.untouched}/cancel`, { csrf, reason: 'read-only must not cancel' }],
  [`/ops/jobs/${SEED.inbox.id}/resolve`, { csrf, action: 'fail', reason: 'read-only must not resolve' }],
  ['/ops/bulk', { csrf, snapshot: 'x', reason: 'read-only must not retry' }],
];

/**
 * Run axe-core on each page (signed in as the admin; `/ops/login` signed
 * out), print every violation, fail on a serious or critical one. Also: each
 * signed-in page has the sign-out form, and (with PAGE_SHOTS) a screenshot.
 */
async function axeAudit(paths) {
  // The panel's CSP (script-src 'self') would refuse the injected axe.
  const a11y = await newContext({ bypassCSP: true });
  const p = await a11y.newPage();
  const report = [];
  for (const path of paths) {
    if (path === '/ops/login') await a11y.clearCookies();
    else await a11y.addCookies(await admin.cookies());
    await p.goto(url(path));
    eq(pathOf(p.url()), pathOf(url(path)), 'the audited page');
    await p.locator('main#content, form#login').first().waitFor();
    await p.addScriptTag({ path: AXE });
    const v = await p.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ['violations'] });
      return r.violations.map((x) => ({ id: x.id, impact: x.impact, help: x.help, nodes: x.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
    });
    for (const x of v) report.push({ path, ...x });
    if (path !== '/ops/login') eq(await p.locator('header form#logout').count(), 1, `${path}: form#logout in the header`);
    if (PAGE_SHOTS) {
      mkdirSync(PAGE_SHOTS, { recursive: true });
      const name = path.replace(/^\/ops\/?/, 'ops/').replace(/[^a-z0-9_]+/gi, '-').replace(/-+$/, '');
      await p.screenshot({ path: join(PAGE_SHOTS, `${name}.png`), fullPage: true });
    }
  }
  await a11y.close();
  for (const x of report) console.log(`    axe ${x.impact}: ${x.path}: ${x.id}: ${x.help} (${x.nodes.join(', ')})`);
  const bad = report.filter((x) => x.impact === 'serious' || x.impact === 'critical');
  assert(bad.length === 0, `${bad.length} serious/critical violations (above)`);
}

/** The bulk action's own page, once there is one. */
let bulkPath = '';

// ---------------------------------------------------------------------------

const admin = await newContext();
const page = await admin.newPage();
const consoleErrors = [];
page.on('console', (m) => {
  if (m.type() === 'error') consoleErrors.push(`${current}: ${m.text()}`);
});
page.on('pageerror', (e) => consoleErrors.push(`${current}: ${e.message}`));
// Works without internet: nothing a page loads comes from elsewhere.
const offOrigin = [];
admin.on('request', (r) => {
  const u = r.url();
  if (!u.startsWith(`${BASE}/`) && !/^(data|blob|about):/.test(u)) offOrigin.push(`${current}: ${u}`);
});

await check('without a session: GET /ops is 303 to /ops/login, a POST is 401', async () => {
  const anon = admin.request; // no cookie yet in this context
  const r = await anon.get(url('/ops'), { maxRedirects: 0 });
  eq(r.status(), 303, 'GET /ops status');
  eq(pathOf(new URL(r.headers()['location'] || '', BASE).href), '/ops/login', 'GET /ops Location');
  for (const p of ['/ops/jobs?view=stranded', `/ops/jobs/${SEED.completed}`, '/ops/inbox']) {
    const r = await anon.get(url(p), { maxRedirects: 0 });
    eq(r.status(), 303, `GET ${p} status`);
  }
  const post = await anon.post(url('/ops/reconcile'), { form: { csrf: 'x' }, maxRedirects: 0 });
  eq(post.status(), 401, 'POST /ops/reconcile status');
});

await check('the sign-in form: labelled fields, a Sign in button', async () => {
  await page.goto(url('/ops'));
  eq(pathOf(page.url()), '/ops/login', 'GET /ops without a session lands on');
  await page.locator('form#login').waitFor();
  eq(await page.getByLabel('Token').getAttribute('name'), 'token', 'the Token field');
  eq(await page.getByLabel('Your name').getAttribute('name'), 'operator', 'the Your name field');
  await page.getByRole('button', { name: 'Sign in' }).waitFor();
});

await check('a wrong token is refused: 401, "wrong token", no session cookie', async () => {
  await page.goto(url('/ops/login'));
  await page.getByLabel('Token').fill(SEED.wrongToken);
  await page.getByLabel('Your name').fill(OPERATOR);
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && pathOf(r.url()) === '/ops/login'),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
  eq(resp.status(), 401, 'POST /ops/login status');
  await page.waitForLoadState();
  assert((await text(page, '#flash')).toLowerCase().includes('wrong token'), `#flash says: ${await text(page, '#flash')}`);
  const cookies = await admin.cookies();
  assert(!cookies.some((c) => c.name === 'clawcut_ops'), `a session cookie was set: ${JSON.stringify(cookies)}`);
  // The same over plain HTTP: no Set-Cookie at all.
  const r = await admin.request.post(url('/ops/login'), { form: { token: ADMIN + 'x', operator: 'x' }, maxRedirects: 0 });
  eq(r.status(), 401, 'POST /ops/login (almost the token) status');
  assert(!(r.headers()['set-cookie'] || '').includes('clawcut_ops'), 'a refused sign-in sets no cookie');
});

await check('sign in: 303 to /ops, a Secure HttpOnly SameSite=Strict cookie on /ops', async () => {
  await signIn(page, ADMIN, OPERATOR);
  const c = (await admin.cookies()).find((c) => c.name === 'clawcut_ops');
  assert(c, 'no clawcut_ops cookie after signing in');
  eq(c.httpOnly, true, 'HttpOnly');
  eq(c.secure, true, 'Secure');
  eq(c.sameSite, 'Strict', 'SameSite');
  eq(c.path, '/ops', 'Path');
  assert(!(await page.evaluate(() => document.cookie)).includes('clawcut_ops'), 'the cookie is readable from script');
  // The same over plain HTTP: 303 to /ops and the cookie's attributes.
  const bare = await http.newContext();
  const r = await bare.post(url('/ops/login'), { form: { token: ADMIN, operator: OPERATOR }, maxRedirects: 0 });
  eq(r.status(), 303, 'POST /ops/login status');
  eq(pathOf(new URL(r.headers()['location'] || '', BASE).href), '/ops', 'POST /ops/login Location');
  const set = r.headersArray().filter((h) => h.name.toLowerCase() === 'set-cookie').map((h) => h.value).find((v) => v.startsWith('clawcut_ops='));
  assert(set, 'no Set-Cookie: clawcut_ops=...');
  for (const attr of [/;\s*HttpOnly/i, /;\s*Secure/i, /;\s*SameSite=Strict/i, /;\s*Path=\/ops(;|$)/]) assert(attr.test(set), `Set-Cookie lacks ${attr}: ${set.replace(/=[^;]+/, '=…')}`);
  await bare.dispose();
  await page.locator('form#logout').waitFor();
  await page.locator('main#content').waitFor();
});

await check('the overview: counts, oldest eligible, providers, activity, error groups', async () => {
  await page.goto(url('/ops'));
  const count = (status) => num(page, `#counts tr[data-status="${status}"] td.count`);
  for (const [status, n] of Object.entries(SEED.counts)) eq(await count(status), n, `#counts ${status}`);
  const csp = (await admin.request.get(url('/ops'))).headers()['content-security-policy'] || '';
  assert(/script-src 'self'/.test(csp) || (/default-src 'self'/.test(csp) && !/script-src/.test(csp)), `Content-Security-Policy: ${csp}`);
  await page.locator('#oldest-eligible').waitFor();
  const paused = await text(page, '#providers tr[data-provider="openai"] .paused');
  eq(paused.toLowerCase(), 'up', 'openai .paused');
  await page.locator('#activity').waitFor();
  const g = page.locator('#error-groups tr.error-group[data-provider="openai"][data-class="server_error"][data-status="503"]');
  eq(await g.count(), 1, 'the openai server_error 503 group rows');
  eq(Number((await g.locator('td.count').innerText()).trim()), SEED.errors.length, 'the group count');
  await g.locator('a.bulk-retry').waitFor();
  for (const id of ['nav-overview', 'nav-jobs', 'nav-stranded', 'nav-inbox']) await page.locator(`a#${id}`).waitFor();
  await page.locator('a#reconcile-all').waitFor();
});

await check('screenshots of the overview: desktop (1280 wide) and phone (390x844)', async () => {
  mkdirSync(SHOTS, { recursive: true });
  await page.goto(url('/ops'));
  await page.locator('#counts').waitFor();
  await page.screenshot({ path: join(SHOTS, 'ops-desktop.png'), fullPage: true });
  const phone = await newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await phone.addCookies(await admin.cookies());
  const p = await phone.newPage();
  await p.goto(url('/ops'));
  eq(pathOf(p.url()), '/ops', 'signed in on the phone, the page');
  await p.locator('#counts').waitFor();
  await p.screenshot({ path: join(SHOTS, 'ops-phone.png') });
  await phone.close();
});

await check('pagination: the full list pages on with a#next-page, no row twice, none lost', async () => {
  await page.goto(url('/ops/jobs?view=all'));
  const total = await num(page, '#jobs-count');
  const seen = [];
  for (let n = 0; n < 10; n++) {
    seen.push(...(await page.locator('table#jobs tr[data-job]').evaluateAll((rs) => rs.map((r) => r.dataset.job))));
    const next = page.locator('a#next-page');
    if ((await next.count()) === 0) break;
    const before = page.url();
    await Promise.all([page.waitForURL((u) => u.href !== before), next.click()]);
  }
  assert(total > 50, `the seed has more than a page of jobs: #jobs-count ${total}`);
  eq(new Set(seen).size, seen.length, 'distinct rows over the pages');
  eq(seen.length, total, 'rows over every page');
});

await check('the stranded jobs: every one listed with its cells; search by job, provider job and scene id', async () => {
  await page.goto(url('/ops'));
  await Promise.all([page.waitForURL(/\/ops\/jobs\?/), page.locator('a#nav-stranded').click()]);
  eq(new URL(page.url()).searchParams.get('view'), 'stranded', 'a#nav-stranded view');
  const want = [...SEED.stranded, SEED.running, ...SEED.errors];
  for (const id of want) {
    const row = page.locator(`table#jobs tr[data-job="${id}"]`);
    eq(await row.count(), 1, `rows for ${id}`);
    for (const c of ['.status', '.provider', '.age', '.attempts', '.next-attempt', '.last-error']) {
      eq(await row.locator(c).count(), 1, `${id}'s ${c} cell`);
    }
    eq(await row.locator('a.job-link').getAttribute('href').then((h) => pathOf(new URL(h, BASE).href)), `/ops/jobs/${id}`, `${id}'s link`);
  }
  eq(await page.locator(`table#jobs tr[data-job="${SEED.completed}"]`).count(), 0, 'the completed job is not stranded');
  eq(await page.locator(`table#jobs tr[data-job="${SEED.inbox.id}"]`).count(), 0, 'the needs_operator job is not stranded');
  eq(await num(page, '#jobs-count'), want.length, '#jobs-count');
  const e1 = page.locator(`table#jobs tr[data-job="${SEED.errors[0]}"]`);
  assert((await e1.locator('.last-error').innerText()).includes('Server(503)'), 'the last error is shown');
  eq((await e1.locator('.attempts').innerText()).trim(), '3', `${SEED.errors[0]} attempts`);
  eq((await e1.locator('.provider').innerText()).trim(), 'openai', `${SEED.errors[0]} provider`);
  const listed = async (query) => {
    await page.goto(url(`/ops/jobs?${query}`));
    return (await page.locator('table#jobs tr[data-job]').evaluateAll((rs) => rs.map((r) => r.dataset.job))).sort();
  };
  const same = (got, want, what) => eq(JSON.stringify(got), JSON.stringify([...want].sort()), what);
  for (const [q, id] of [[SEED.stranded[1], SEED.stranded[1]], ['vid_done_2', SEED.stranded[1]], [`s-${SEED.stranded[1]}`, SEED.stranded[1]]]) {
    same(await listed(`view=all&q=${encodeURIComponent(q)}`), [id], `search q=${q}`);
  }
  same(await listed('view=all&status=pending'), SEED.errors, 'view=all&status=pending');
  same(await listed('view=needs_operator'), [SEED.inbox.id], 'view=needs_operator');
  same(await listed('view=stranded&provider=nobody'), [], 'view=stranded&provider=nobody');
  // The error group's own list, by the key its bulk link carries.
  await page.goto(url('/ops'));
  const href = await page.locator('#error-groups tr.error-group[data-status="503"] a.bulk-retry').getAttribute('href');
  const group = new URL(href, BASE).searchParams.get('group');
  assert(group, `a.bulk-retry has no group: ${href}`);
  same(await listed(`view=all&group=${encodeURIComponent(group)}`), SEED.errors, `view=all&group=${group}`);
});

await check('accessibility (axe-core) of every page: no serious or critical violation', async () => {
  await page.goto(url('/ops'));
  const href = await page.locator('#error-groups tr.error-group[data-status="503"] a.bulk-retry').getAttribute('href');
  const bulkNew = `/ops/bulk/new${new URL(href, BASE).search}`;
  await axeAudit([
    '/ops/login',
    '/ops',
    '/ops/jobs?view=stranded',
    '/ops/jobs?view=all',
    `/ops/jobs/${SEED.completed}`,
    `/ops/jobs/${SEED.inbox.id}`,
    '/ops/inbox',
    `/ops/jobs/${SEED.inbox.id}/resolve?action=resubmit`,
    `/ops/jobs/${SEED.inbox.id}/resolve?action=fail`,
    `/ops/jobs/${SEED.untouched}/cancel`,
    `/ops/jobs/${SEED.untouched}/reconcile`,
    '/ops/reconcile',
    `/ops/jobs/${SEED.completed}/verify`,
    `/ops/jobs/${SEED.damaged}/verify`,
    bulkNew,
  ]);
});

await check('self-refresh: the overview re-fetches itself, and pauses while the tab is hidden', async () => {
  await page.goto(url('/ops'));
  const every = Number(await page.locator('main#content').getAttribute('data-refresh'));
  assert(every > 0, `main#content has no data-refresh on the overview`);
  const wait = Math.min(every + Math.max(1000, every / 2), 31_000);
  let fetches = 0;
  const count = (r) => {
    if (pathOf(r.url()) === '/ops' && r.resourceType() !== 'document') fetches++;
  };
  page.on('request', count);
  await page.waitForTimeout(wait);
  const visible = fetches;
  // Hide the tab as far as the page can tell.
  await page.evaluate(() => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  await page.waitForTimeout(every <= 1000 ? 300 : 100);
  fetches = 0;
  await page.waitForTimeout(wait);
  const hidden = fetches;
  page.off('request', count);
  assert(visible >= 1, `no refresh in ${wait} ms with data-refresh=${every}`);
  eq(hidden, 0, `refreshes in ${wait} ms while hidden`);
});

await check('a read-only token: it signs in and looks, and every mutating POST is 403', async () => {
  const ro = await newContext();
  const p = await ro.newPage();
  await signIn(p, READONLY, 'Rita Readonly');
  await p.goto(url(`/ops/jobs/${SEED.untouched}`));
  await p.locator('#job-status').waitFor();
  await p.goto(url('/ops'));
  const csrf = await csrfOf(p);
  const got = [];
  for (const [path, fields] of mutating(csrf)) got.push(`${path} ${await pagePost(p, path, fields)}`);
  // The bearer header too (no cookie, no CSRF then).
  const bare = await http.newContext();
  for (const [path, fields] of mutating('')) {
    const r = await bare.post(url(path), {
      form: fields,
      headers: { Authorization: `Bearer ${READONLY}` },
      maxRedirects: 0,
    });
    got.push(`${path} (bearer) ${r.status()}`);
  }
  await bare.dispose();
  const bad = got.filter((g) => !g.endsWith(' 403'));
  assert(bad.length === 0, `expected 403 for each; got: ${bad.join('; ')}`);
  await ro.close();
});

await check('the bearer header works on /ops routes without a session', async () => {
  const ctx = await http.newContext();
  for (const p of ['/ops', '/ops/jobs?view=all', `/ops/jobs/${SEED.completed}`, '/ops/inbox']) {
    const r = await ctx.get(url(p), { headers: { Authorization: `Bearer ${ADMIN}` }, maxRedirects: 0 });
    eq(r.status(), 200, `GET ${p} with the bearer header`);
  }
  const r = await ctx.get(url('/ops'), { headers: { Authorization: 'Bearer wrong' }, maxRedirects: 0 });
  eq(r.status(), 401, 'GET /ops with a wrong bearer token');
  await ctx.dispose();
});

await check('an action without the CSRF token, with a wrong one, or from another origin is 403', async () => {
  const target = `/ops/jobs/${SEED.csrfTarget}/reconcile`;
  await page.goto(url(target));
  await page.locator('form#confirm').waitFor();
  const csrf = await page.locator('form#confirm input[type=hidden][name=csrf]').getAttribute('value');
  assert(csrf, 'form#confirm has no csrf value');
  eq(await pagePost(page, target, {}), 403, 'POST without csrf');
  eq(await pagePost(page, target, { csrf: csrf.slice(0, -2) + (csrf.endsWith('aa') ? 'bb' : 'aa') }), 403, 'POST with a wrong csrf');
  // With the session cookie and a valid token, but from elsewhere.
  const post = (headers) => admin.request.post(url(target), { form: { csrf }, headers, maxRedirects: 0 });
  eq((await post({ Origin: EVIL })).status(), 403, `POST with Origin: ${EVIL}`);
  eq((await post({ Referer: `${EVIL}/page` })).status(), 403, 'POST with only a foreign Referer');
  eq((await post({ Origin: 'null' })).status(), 403, 'POST with Origin: null');
});

await check('reconcile one job: confirm, and its page turns completed without a reload', async () => {
  const id = SEED.reconcile;
  await page.goto(url(`/ops/jobs/${id}`));
  eq(await page.locator('#job-status').getAttribute('data-status'), 'processing', 'before');
  const refresh = await page.locator('main#content').getAttribute('data-refresh');
  assert(refresh && Number(refresh) > 0, `the job page refreshes itself (data-refresh=${refresh})`);
  await Promise.all([page.waitForURL((u) => pathOf(u.href) === `/ops/jobs/${id}/reconcile`), page.locator('a#reconcile-job').click()]);
  await confirm(page, { landsOn: (p) => p === `/ops/jobs/${id}` });
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  await page.locator('#job-status[data-status="completed"]').waitFor({ timeout: 30_000 });
  eq(await page.evaluate(() => window.__sameDocument === true), true, 'the page was not reloaded');
});

await check('a job page: its timeline, its clip checksum, verify, the export, the preview plays', async () => {
  const id = SEED.reconcile;
  await page.goto(url(`/ops/jobs/${id}`));
  eq(await page.locator('#job-status').getAttribute('data-status'), 'completed', 'status');
  const events = page.locator('ol#timeline li.event');
  assert((await events.count()) >= 1, 'no li.event in ol#timeline');
  eq(await page.locator('ol#timeline li.event[data-to="completed"]').count(), 1, 'events to completed');
  eq(await text(page, '#media #video-sha256'), SEED.clip.sha256, '#video-sha256');
  assert((await text(page, '#media #video-bytes')).replace(/[^\d]/g, '').includes(String(SEED.clip.bytes)), `#video-bytes: ${await text(page, '#video-bytes')}`);

  const src = await page.locator('video#preview').getAttribute('src');
  eq(pathOf(new URL(src, BASE).href), `/ops/jobs/${id}/video`, 'video#preview src');
  const range = await page.evaluate(async (src) => {
    const r = await fetch(src, { headers: { Range: 'bytes=0-' } });
    const part = await fetch(src, { headers: { Range: 'bytes=0-99' } });
    return {
      status: r.status,
      bytes: (await r.arrayBuffer()).byteLength,
      partStatus: part.status,
      partBytes: (await part.arrayBuffer()).byteLength,
      contentRange: part.headers.get('content-range'),
      type: r.headers.get('content-type'),
    };
  }, src);
  eq(range.status, 206, 'Range: bytes=0- status');
  eq(range.bytes, SEED.clip.bytes, 'Range: bytes=0- length');
  eq(range.partStatus, 206, 'Range: bytes=0-99 status');
  eq(range.partBytes, 100, 'Range: bytes=0-99 length');
  eq(range.contentRange, `bytes 0-99/${SEED.clip.bytes}`, 'Content-Range');
  assert((range.type || '').startsWith('video/'), `Content-Type ${range.type}`);

  const played = await page.evaluate(async () => {
    const v = () => document.querySelector('video#preview');
    const el = v();
    el.muted = true;
    let playError = null;
    try {
      await el.play();
    } catch (e) {
      playError = String(e);
    }
    const t0 = Date.now();
    while (Date.now() - t0 < 8000 && !(el.readyState >= 2 && el.currentTime > 0)) await new Promise((r) => setTimeout(r, 100));
    // The page refreshes itself: a refresh must not pull the video from
    // under an operator who is watching it.
    const every = Number(document.getElementById('content').dataset.refresh || 0);
    if (every > 0) await new Promise((r) => setTimeout(r, Math.min(every, 5000) + 500));
    return {
      playError,
      readyState: el.readyState,
      currentTime: el.currentTime,
      duration: el.duration,
      mediaError: el.error && el.error.code,
      stillInPage: el === v() && el.isConnected,
    };
  });
  assert(played.readyState >= 2 && played.currentTime > 0 && played.duration > 0, `the preview did not play: ${JSON.stringify(played)}`);
  assert(played.stillInPage, `the self-refresh replaced the playing video element: ${JSON.stringify(played)}`);

  const exp = await page.locator('a#export').getAttribute('href');
  eq(pathOf(new URL(exp, BASE).href), `/ops/jobs/${id}/events.ndjson`, 'a#export href');
  const nd = await page.evaluate(async (h) => (await fetch(h)).text(), exp);
  const lines = nd.split('\n').filter((l) => l.trim() !== '');
  assert(lines.length >= 1, 'the export is empty');
  const objs = lines.map((l, i) => {
    try {
      return JSON.parse(l);
    } catch {
      throw new Error(`export line ${i + 1} is not JSON: ${l.slice(0, 120)}`);
    }
  });
  assert(objs.some((o) => JSON.stringify(o).includes('completed')), 'no completed event in the export');

  await Promise.all([page.waitForURL((u) => pathOf(u.href) === `/ops/jobs/${id}/verify`), page.locator('a#verify').click()]);
  eq(await page.locator('#verify-result').getAttribute('data-ok'), 'true', `#verify-result of ${id}`);
  // The seeded completed job, whose file the daemon did not write.
  await page.goto(url(`/ops/jobs/${SEED.completed}`));
  eq(await text(page, '#video-sha256'), SEED.clip.sha256, `${SEED.completed} #video-sha256`);
  await page.goto(url(`/ops/jobs/${SEED.completed}/verify`));
  eq(await page.locator('#verify-result').getAttribute('data-ok'), 'true', `#verify-result of ${SEED.completed}`);
  // One whose file was damaged on disk after it completed.
  await page.goto(url(`/ops/jobs/${SEED.damaged}/verify`));
  eq(await page.locator('#verify-result').getAttribute('data-ok'), 'false', `#verify-result of ${SEED.damaged}`);
});

await check('resolve a needs_operator job: the inbox, the resubmit warning, fail with a reason', async () => {
  const { id, why, key } = SEED.inbox;
  await page.goto(url('/ops'));
  await Promise.all([page.waitForURL((u) => pathOf(u.href) === '/ops/inbox'), page.locator('a#nav-inbox').click()]);
  const row = page.locator(`table#inbox tr[data-job="${id}"]`);
  eq(await row.count(), 1, `the inbox row of ${id}`);
  assert((await row.locator('.why').innerText()).includes(why), `.why: ${await row.locator('.why').innerText()}`);
  eq((await row.locator('.idempotency-key').innerText()).trim(), key, '.idempotency-key');
  await row.locator('.last-answer').waitFor();
  eq((await row.locator('.attempts').innerText()).trim(), '1', '.attempts');
  await Promise.all([page.waitForURL(/\/resolve\?action=resubmit/), row.locator('a.resubmit').click()]);
  await page.locator('#resubmit-warning').waitFor();
  eq(await page.locator('form#confirm input[type=hidden][name=action]').getAttribute('value'), 'resubmit', 'hidden action');
  await page.goBack();
  await Promise.all([page.waitForURL(/\/resolve\?action=fail/), page.locator(`table#inbox tr[data-job="${id}"] a.fail`).click()]);
  eq(await page.locator('#resubmit-warning').count(), 0, '#resubmit-warning on a fail');
  eq(await page.locator('form#confirm input[type=hidden][name=action]').getAttribute('value'), 'fail', 'hidden action');
  const reason = page.locator('form#confirm textarea[name=reason]');
  eq(await reason.evaluate((t) => t.required), true, 'the reason is required');
  // And the server requires it too: a blank one is refused, nothing done.
  const blank = await pagePost(page, `/ops/jobs/${id}/resolve`, { csrf: await csrfOf(page), action: 'fail', reason: '  ' });
  assert(blank >= 400 && blank < 500 && blank !== 401 && blank !== 403, `POST resolve with a blank reason: ${blank}`);
  await confirm(page, { reason: 'provider confirms it never got it', landsOn: (p) => p === `/ops/jobs/${id}` });
  eq(await page.locator('#job-status').getAttribute('data-status'), 'failed', 'after failing');
  await page.goto(url('/ops/inbox'));
  eq(await page.locator(`table#inbox tr[data-job="${id}"]`).count(), 0, 'the resolved job left the inbox');
});

await check('cancel a running job, with a reason', async () => {
  const id = SEED.running;
  await page.goto(url(`/ops/jobs/${id}`));
  eq(await page.locator('#job-status').getAttribute('data-status'), 'processing', 'before');
  await Promise.all([page.waitForURL((u) => pathOf(u.href) === `/ops/jobs/${id}/cancel`), page.locator('a#cancel-job').click()]);
  await confirm(page, { reason: 'wrong prompt', landsOn: (p) => p === `/ops/jobs/${id}` });
  await page.locator('#job-status[data-status="canceled"]').waitFor();
  assert((await page.locator('ol#timeline li.event[data-to="canceled"]').count()) === 1, 'the cancel is in the timeline');
});

await check('a bulk retry of an error group is tied to its snapshot: a job changed meanwhile is skipped', async () => {
  await page.goto(url('/ops'));
  const g = page.locator('#error-groups tr.error-group[data-provider="openai"][data-status="503"]');
  await Promise.all([page.waitForURL(/\/ops\/bulk\/new\?group=/), g.locator('a.bulk-retry').click()]);
  eq(await num(page, '#bulk-count'), SEED.errors.length, '#bulk-count');
  const sample = await page.locator('ul#bulk-sample li[data-job]').evaluateAll((ls) => ls.map((l) => l.dataset.job));
  assert(sample.length >= 1 && sample.every((j) => SEED.errors.includes(j)), `ul#bulk-sample: ${JSON.stringify(sample)}`);
  const snap = await page.locator('form#confirm input[type=hidden][name=snapshot]').getAttribute('value');
  assert(snap, 'no snapshot in form#confirm');

  // Meanwhile, in another tab: one job of the group is canceled.
  const other = await admin.newPage();
  await other.goto(url(`/ops/jobs/${SEED.changed}/cancel`));
  await confirm(other, { reason: 'changed meanwhile', landsOn: (p) => p === `/ops/jobs/${SEED.changed}` });
  await other.locator('#job-status[data-status="canceled"]').waitFor();
  await other.close();

  await confirm(page, { reason: 'openai is back up', landsOn: (p) => /^\/ops\/bulk\/[^/]+$/.test(p) && p !== '/ops/bulk/new' });
  const every = Number(await page.locator('main#content').getAttribute('data-refresh'));
  assert(every > 0 || (await page.locator('#bulk-state').getAttribute('data-state')) === 'done', 'the running bulk page refreshes itself');
  bulkPath = pathOf(page.url());
  await page.locator('#bulk-state[data-state="done"]').waitFor({ timeout: 30_000 });
  eq(await num(page, '#bulk-done'), SEED.errors.length - 1, '#bulk-done');
  eq(await num(page, '#bulk-skipped'), 1, '#bulk-skipped');
  eq(await num(page, '#bulk-failed'), 0, '#bulk-failed');
});

await check('the page at phone width (390x844): no horizontal scroll', async () => {
  const phone = await newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await phone.addCookies(await admin.cookies());
  const p = await phone.newPage();
  const wide = [];
  for (const path of ['/ops', '/ops/jobs?view=all', `/ops/jobs/${SEED.reconcile}`, '/ops/inbox']) {
    await p.goto(url(path));
    eq(pathOf(p.url()), pathOf(url(path)), 'signed in on the phone, the page');
    await p.locator('main#content').waitFor();
    const m = await p.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
    if (m.scroll > m.inner) wide.push(`${path}: scrollWidth ${m.scroll} > innerWidth ${m.inner}`);
    if (path === '/ops') assert(m.scroll <= m.inner, `the overview scrolls sideways: ${JSON.stringify(m)}`);
  }
  if (wide.length) console.log(`    note: wider than a phone: ${wide.join('; ')}`);
  await phone.close();
});

await check('accessibility after the actions (axe-core): no serious or critical violation', async () => {
  await axeAudit([`/ops/jobs/${SEED.reconcile}`, `/ops/jobs/${SEED.running}`, ...(bulkPath ? [bulkPath] : []), '/ops']);
});

await check('reconcile all: the confirmation, then back on the overview', async () => {
  await page.goto(url('/ops'));
  await Promise.all([page.waitForURL((u) => pathOf(u.href) === '/ops/reconcile'), page.locator('a#reconcile-all').click()]);
  await confirm(page, { landsOn: (p) => p === '/ops' });
  await page.locator('#counts').waitFor();
  // The same action: with a same-origin Referer and no Origin, and with the
  // bearer header and no CSRF token, it is accepted.
  const csrf = await csrfOf(page);
  const viaReferer = await admin.request.post(url('/ops/reconcile'), { form: { csrf }, headers: { Referer: url('/ops/reconcile') }, maxRedirects: 0 });
  eq(viaReferer.status(), 303, 'POST /ops/reconcile with the cookie, the csrf and a same-origin Referer');
  const bare = await http.newContext();
  const viaBearer = await bare.post(url('/ops/reconcile'), { headers: { Authorization: `Bearer ${ADMIN}` }, maxRedirects: 0 });
  await bare.dispose();
  eq(viaBearer.status(), 303, 'POST /ops/reconcile with the admin bearer header');
  eq(pathOf(new URL(viaBearer.headers()['location'] || '', BASE).href), '/ops', 'its Location');
});

await check('sign out: form#logout ends the session', async () => {
  await page.goto(url('/ops'));
  await Promise.all([
    page.waitForURL((u) => pathOf(u.href) === '/ops/login'),
    page.locator('form#logout').locator('button, input[type=submit]').first().click(),
  ]);
  await page.goto(url('/ops'));
  eq(pathOf(page.url()), '/ops/login', 'GET /ops after signing out lands on');
  const r = await admin.request.post(url('/ops/reconcile'), { form: { csrf: 'x' }, maxRedirects: 0 });
  eq(r.status(), 401, 'POST /ops/reconcile after signing out');
});

await check('no request left the daemon (no CDN)', async () => {
  assert(offOrigin.length === 0, offOrigin.slice(0, 10).join('\n'));
});

await check('no script errors in the pages', async () => {
  // CSP reports from the axe pages are not the panel's.
  const errs = consoleErrors.filter((e) => !/Failed to load resource/.test(e));
  assert(errs.length === 0, errs.join('\n'));
});

await browser.close();
clearTimeout(overall);
const failed = results.filter((r) => !r.ok).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
