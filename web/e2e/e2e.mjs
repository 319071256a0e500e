#!/usr/bin/env node
// Browser end-to-end test of the web UI against a running Pulltrace server.
//
// It plays two agents itself: it POSTs AgentReports (pkg/api AgentReport, full snapshots) to
// the server and watches headless Chromium show them through the SSE stream.
//
//   PULLTRACE_URL          base URL of the UI, may carry a path prefix (required), e.g.
//                          http://127.0.0.1:8080/ or
//                          http://127.0.0.1:8001/api/v1/namespaces/pulltrace/services/pulltrace-server:8080/proxy/
//   PULLTRACE_REPORT_URL   where reports go: the full .../api/v1/report URL, or a base URL to
//                          resolve api/v1/report against (default: against PULLTRACE_URL)
//   PULLTRACE_TOKEN        agent token, sent as "Authorization: Bearer" (optional)
//   CHROMIUM_PATH          default /usr/bin/chromium (Debian's chromium package)
//
// Screenshots go to web/e2e/artifacts/. Exits 1 naming the failed check.

import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = process.env.E2E_ARTIFACTS || path.join(here, 'artifacts');
const TIMEOUT = Number(process.env.E2E_TIMEOUT_MS || 15000);

function die(msg) {
  console.error(`e2e: ${msg}`);
  process.exit(1);
}

if (!process.env.PULLTRACE_URL) die('PULLTRACE_URL is not set (the UI base URL, e.g. http://127.0.0.1:8080/)');
// A base without a trailing slash would resolve the UI's relative URLs one level too high.
const BASE = new URL(process.env.PULLTRACE_URL.replace(/\/?$/, '/'));
const REPORT_URL = (() => {
  const r = process.env.PULLTRACE_REPORT_URL;
  if (!r) return new URL('api/v1/report', BASE);
  const u = new URL(r);
  return u.pathname.endsWith('/api/v1/report') ? u : new URL('api/v1/report', r.replace(/\/?$/, '/'));
})();
const TOKEN = process.env.PULLTRACE_TOKEN || '';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

// ---- the agents' view of the world ----

const run = randomBytes(3).toString('hex');
const MiB = 1024 * 1024;
const hex = (s) => createHash('sha256').update(`${run}/${s}`).digest('hex');
const iso = (msAgo = 0) => new Date(Date.now() - msAgo).toISOString();

const nodeA = `e2e-${run}-node-a`;
const nodeB = `e2e-${run}-node-b`;
const ns = `e2e-${run}`;
const imgA = `e2e.local/pulltrace-e2e/app-${run}:1.0`;
const imgB = `e2e.local/pulltrace-e2e/db-${run}:2.0`;
const imgFailed = `e2e.local/pulltrace-e2e/missing-${run}:0.1`;
const imgStalled = `e2e.local/pulltrace-e2e/big-${run}:3.0`;
const layerA = [
  { digest: `sha256:${hex('a1')}`, size: 3 * MiB },
  { digest: `sha256:${hex('a2')}`, size: 40 * MiB },
  { digest: `sha256:${hex('a3')}`, size: 20 * MiB },
];
const TARGZ = 'application/vnd.oci.image.layer.v1.tar+gzip';

/** A Pull as an agent reports it, totals derived from its layers like api.Pull.Summarize. */
function mkPull({ id, node, image, state, layers, pods = [], startedMsAgo = 30000, error }) {
  const total = layers.reduce((n, l) => n + l.totalBytes, 0);
  const got = layers.reduce((n, l) => n + (l.state === 'done' || l.state === 'exists' ? l.totalBytes : l.downloadedBytes), 0);
  const finished = state === 'completed' || state === 'cached';
  return {
    id,
    nodeName: node,
    imageRef: image,
    repository: image.replace(/:[^:/]+$/, ''),
    state,
    totalBytes: total,
    downloadedBytes: got,
    bytesPerSec: 0,
    percent: finished ? 100 : total ? Math.floor((got * 10000) / total) / 100 : 0,
    layerCount: layers.length,
    layersDone: layers.filter((l) => l.state === 'done' || l.state === 'exists').length,
    totalKnown: true,
    startedAt: iso(startedMsAgo),
    ...(finished ? { completedAt: iso() } : {}),
    updatedAt: iso(),
    ...(error ? { error } : {}),
    pods,
    layers,
  };
}

const layer = (digest, size, state, got = 0) => ({
  digest,
  mediaType: TARGZ,
  totalBytes: size,
  downloadedBytes: state === 'done' || state === 'exists' ? size : got,
  state,
});

const pullA = (stage) =>
  mkPull({
    id: `e2e-${run}-a`,
    node: nodeA,
    image: imgA,
    state: stage === 3 ? 'completed' : 'active',
    pods: [{ namespace: ns, podName: 'app-0', container: 'app' }],
    layers: [
      layer(layerA[0].digest, layerA[0].size, 'exists'),
      stage === 1
        ? layer(layerA[1].digest, layerA[1].size, 'downloading', 4 * MiB)
        : stage === 2
          ? layer(layerA[1].digest, layerA[1].size, 'downloading', 30 * MiB)
          : layer(layerA[1].digest, layerA[1].size, 'done'),
      stage === 3
        ? layer(layerA[2].digest, layerA[2].size, 'done')
        : stage === 2
          ? layer(layerA[2].digest, layerA[2].size, 'downloading', 6 * MiB)
          : layer(layerA[2].digest, layerA[2].size, 'waiting'),
    ],
  });

const pullsB = () => [
  mkPull({
    id: `e2e-${run}-b`,
    node: nodeB,
    image: imgB,
    state: 'active',
    startedMsAgo: 95000,
    pods: [
      { namespace: ns, podName: 'db-0', container: 'db' },
      { namespace: `${ns}-other`, podName: 'db-replica-1', container: 'db' },
    ],
    layers: [layer(`sha256:${hex('b1')}`, 120 * MiB, 'downloading', 50 * MiB), layer(`sha256:${hex('b2')}`, 2 * MiB, 'waiting')],
  }),
  mkPull({
    id: `e2e-${run}-failed`,
    node: nodeB,
    image: imgFailed,
    state: 'failed',
    startedMsAgo: 240000,
    error: `failed to resolve reference "${imgFailed}": not found`,
    pods: [{ namespace: ns, podName: 'broken-0', container: 'main' }],
    layers: [],
  }),
  mkPull({
    id: `e2e-${run}-stalled`,
    node: nodeB,
    image: imgStalled,
    state: 'stalled',
    startedMsAgo: 600000,
    pods: [{ namespace: ns, podName: 'ml-0', container: 'model' }],
    layers: [layer(`sha256:${hex('s1')}`, 1536 * MiB, 'downloading', 700 * MiB)],
  }),
];

const agents = {
  [nodeA]: { id: `e2e-agent-a-${run}`, seq: 0 },
  [nodeB]: { id: `e2e-agent-b-${run}`, seq: 0 },
};

async function report(node, pulls) {
  const a = agents[node];
  const body = {
    schemaVersion: 'v1',
    nodeName: node,
    agentVersion: 'e2e',
    agentId: a.id,
    sequence: ++a.seq,
    timestamp: iso(),
    containerdConnected: true,
    pulls,
  };
  let res;
  try {
    res = await fetch(REPORT_URL, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}) },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new Error(`POST ${REPORT_URL}: ${e.cause?.message || e.message}`);
  }
  if (!res.ok) throw new Error(`POST ${REPORT_URL} for ${node}: HTTP ${res.status} ${await res.text()}`);
}

// ---- checks ----

let passed = 0;
let step = 'start';
const ok = (name) => {
  passed++;
  console.log(`ok ${passed} - ${name}`);
};

const rowSel = (image) => `.pull-row[data-image="${image}"]`;
const valueNow = (page, image) =>
  page.$eval(`${rowSel(image)} [role=progressbar]`, (el) => Number(el.getAttribute('aria-valuenow')));
const fillWidth = (page, image) =>
  page.$eval(`${rowSel(image)} [role=progressbar] .fill`, (el) => el.getBoundingClientRect().width);

async function shoot(page, name) {
  // Let the bar transitions finish so the picture shows settled values.
  await page.waitForTimeout(600);
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`   screenshot ${path.relative(process.cwd(), file)}`);
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  console.log(`e2e: UI ${BASE.href}, reports to ${REPORT_URL.href}, run ${run}`);

  step = 'send the first reports';
  await report(nodeA, [pullA(1)]);
  await report(nodeB, pullsB());
  ok('server accepted the agent reports');

  const profile = mkdtempSync(path.join(os.tmpdir(), 'pulltrace-e2e-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
    colorScheme: 'light',
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(TIMEOUT);
  const pageErrors = [];
  const strayRequests = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // The server's Content-Security-Policy must allow everything the built UI does: a
  // violation (a blocked script, style or request) fails the run.
  const cspViolations = [];
  await page.exposeFunction('__pulltraceCSP', (v) => cspViolations.push(v));
  await page.addInitScript(() =>
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__pulltraceCSP(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`),
    ),
  );
  page.on('console', (m) => m.type() === 'error' && console.log(`   browser console: ${m.text()}`));
  // Everything the page loads must stay under the base URL: the UI may sit behind a prefix.
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith('data:') && !u.startsWith(BASE.href)) strayRequests.push(u);
  });

  try {
    step = 'load the page';
    const resp = await page.goto(BASE.href, { waitUntil: 'domcontentloaded' });
    const hdrs = resp ? await resp.allHeaders() : {};
    if (!/frame-ancestors 'none'/.test(hdrs['content-security-policy'] ?? '') || hdrs['referrer-policy'] !== 'no-referrer' || hdrs['x-frame-options'] !== 'DENY')
      throw new Error(`UI security headers: ${JSON.stringify(hdrs)}`);
    await page.waitForSelector('.conn-live');
    ok('page loaded and the event stream is live');

    step = 'a row appears';
    await page.waitForSelector(rowSel(imgA));
    await page.waitForSelector(rowSel(imgB));
    await page.waitForSelector(`${rowSel(imgFailed)}[data-state=failed]`);
    const errText = await page.textContent(`${rowSel(imgFailed)} .error`);
    if (!errText?.includes('not found')) throw new Error(`failed pull shows error ${JSON.stringify(errText)}`);
    ok('rows appear for the reported pulls, the failed one with its error');

    step = 'the bar advances';
    await page.waitForTimeout(500); // let the first bar transition settle before measuring
    const v1 = await valueNow(page, imgA);
    const w1 = await fillWidth(page, imgA);
    await report(nodeA, [pullA(2)]);
    await page.waitForFunction(
      ([sel, v]) => Number(document.querySelector(sel)?.getAttribute('aria-valuenow')) > v,
      [`${rowSel(imgA)} [role=progressbar]`, v1],
    );
    await page.waitForFunction(
      ([sel, w]) => document.querySelector(sel).getBoundingClientRect().width > w,
      [`${rowSel(imgA)} [role=progressbar] .fill`, w1],
    );
    const v2 = await valueNow(page, imgA);
    ok(`progress bar advanced without reload (${v1}% -> ${v2}%)`);

    step = 'expand the layers';
    await page.focus(rowSel(imgA));
    await page.keyboard.press('Enter');
    await page.waitForSelector(`${rowSel(imgA)}[aria-expanded=true]`);
    const short = layerA[1].digest.slice('sha256:'.length, 'sha256:'.length + 12);
    const layersTable = page.locator(`.pull:has(${rowSel(imgA)}) table.layers`);
    await layersTable.getByText(short, { exact: true }).waitFor();
    const rows = await layersTable.locator('tbody tr').count();
    if (rows !== 3) throw new Error(`expected 3 layer rows, got ${rows}`);
    if ((await layersTable.textContent()).includes('sha256:')) throw new Error('layer digests are not shortened');
    ok(`Enter expands the layers, showing short digest ${short}`);

    step = 'screenshots (active)';
    await page.goto(`${BASE.href}?image=${encodeURIComponent(`-${run}:`)}`);
    await page.waitForSelector(rowSel(imgA));
    await page.click(rowSel(imgA)); // expanded, to show the layers
    await page.waitForSelector(`${rowSel(imgA)}[aria-expanded=true]`);
    await page.mouse.move(0, 0);
    await shoot(page, 'pulltrace-light.png');
    await page.emulateMedia({ colorScheme: 'dark' });
    await shoot(page, 'pulltrace-dark.png');
    await page.setViewportSize({ width: 1024, height: 768 });
    await shoot(page, 'pulltrace-medium-dark.png');
    await page.setViewportSize({ width: 390, height: 844 });
    await shoot(page, 'pulltrace-phone-dark.png');
    await page.emulateMedia({ colorScheme: 'light' });
    await shoot(page, 'pulltrace-phone-light.png');
    await page.setViewportSize({ width: 1280, height: 800 });
    ok('screenshots saved');

    step = 'filter by node';
    await page.goto(BASE.href);
    await page.waitForSelector(rowSel(imgB));
    await page.fill('input[name=node]', nodeA);
    await page.waitForSelector(rowSel(imgB), { state: 'detached' });
    await page.waitForSelector(rowSel(imgA));
    const url = new URL(page.url());
    if (url.searchParams.get('node') !== nodeA) throw new Error(`URL does not keep the filter: ${page.url()}`);
    if (!url.pathname.startsWith(BASE.pathname)) throw new Error(`URL lost its path prefix: ${page.url()}`);
    ok('node filter hides the other node and is kept in the URL');

    step = 'reload keeps the filter';
    await page.reload();
    await page.waitForSelector(rowSel(imgA));
    await page.waitForTimeout(300); // a snapshot frame that wrongly showed B would land by now
    if ((await page.locator(rowSel(imgB)).count()) !== 0) throw new Error('after reload the filtered-out row is back');
    const kept = await page.inputValue('input[name=node]');
    if (kept !== nodeA) throw new Error(`after reload the node filter reads ${JSON.stringify(kept)}`);
    ok('reloading the URL reproduces the filtered view');

    step = 'pod link filters';
    await page.goto(BASE.href);
    await page.waitForSelector(rowSel(imgB));
    await page.click(`${rowSel(imgB)} a.pod:has-text("${ns}/db-0")`);
    await page.waitForSelector(rowSel(imgA), { state: 'detached' });
    const pu = new URL(page.url());
    if (pu.searchParams.get('namespace') !== ns || pu.searchParams.get('pod') !== 'db-0')
      throw new Error(`pod link set ${page.url()}`);
    if ((await page.getAttribute(rowSel(imgB), 'aria-expanded')) !== 'false')
      throw new Error('clicking a pod link also toggled the row');
    ok('a pod link sets the namespace and pod filter');

    step = 'state filter chip';
    await page.goto(BASE.href);
    await page.waitForSelector(rowSel(imgA));
    await page.click('button.chip-failed');
    await page.waitForSelector(rowSel(imgA), { state: 'detached' });
    await page.waitForSelector(rowSel(imgFailed));
    if (new URL(page.url()).searchParams.get('state') !== 'failed') throw new Error(`state chip set ${page.url()}`);
    ok('the failed chip filters by state');

    step = 'completed';
    await page.goto(BASE.href);
    await page.waitForSelector(rowSel(imgA));
    await report(nodeA, [pullA(3)]);
    await page.waitForSelector(`${rowSel(imgA)}[data-state=completed] .badge-completed`);
    const pct = await page.textContent(`${rowSel(imgA)} .pct`);
    if (pct?.trim() !== '100.0%') throw new Error(`completed pull shows ${pct}`);
    ok('a completed pull shows completed at 100%');
    await shoot(page, 'pulltrace-completed-light.png');

    step = 'page health';
    if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
    if (strayRequests.length) throw new Error(`requests outside the base URL: ${strayRequests.join(', ')}`);
    if (cspViolations.length) throw new Error(`Content-Security-Policy violations: ${cspViolations.join('; ')}`);
    ok('no page errors, no CSP violation, and every request stayed under the base URL');
  } catch (e) {
    await page.screenshot({ path: path.join(ARTIFACTS, 'failure.png'), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().then(
  () => {
    console.log(`e2e: ${passed} passed, 0 failed`);
  },
  (e) => {
    console.error(`e2e FAILED at "${step}": ${e.message}`);
    console.error(`e2e: ${passed} passed, 1 failed`);
    process.exit(1);
  },
);
