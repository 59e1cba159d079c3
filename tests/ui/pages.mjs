// The node's pages in Chromium (run by tests/e2e/ui.rs, which starts the node and passes its
// address, two API keys, the DICOM port and the files of a study not yet sent).

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { BASE, api, browser, check, figure, run, signIn, step, tab, until } from './lib.mjs';

const ADMIN = process.env.RS_ADMIN_KEY;
const READER = process.env.RS_READ_KEY;
const STUDY = process.env.RS_STUDY_UID;
const FILES = JSON.parse(process.env.RS_FILES);
const SHOTS = process.env.RS_SHOTS || '';

const shot = async (page, name, opts = {}) => {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, `${name}.png`), ...opts });
};

/** When the first `inference.completed` of the study reaches a client of the node. */
function completedAt() {
  const ctrl = new AbortController();
  const seen = (async () => {
    const resp = await fetch(`${BASE}/v1/events?type=inference.completed&study_uid=${STUDY}`, {
      headers: { 'x-api-key': ADMIN, Accept: 'text/event-stream' },
      signal: ctrl.signal,
    });
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error('event stream ended');
      buf += value;
      if (/event: ?inference\.completed/.test(buf)) return Date.now();
    }
  })();
  return { seen, stop: () => ctrl.abort() };
}

function storescu(port) {
  return new Promise((resolve, reject) => {
    const p = spawn('storescu', ['-xr', '-aec', 'RADSTREAM', '127.0.0.1', port, ...FILES], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`storescu exited ${code}: ${out}`))));
  });
}

run(async () => {
  const b = await browser();

  step('a bad key is refused with a clear message');
  {
    const page = await tab(b);
    await page.goto(`${BASE}/ui/`);
    await page.fill('input[name="api_key"]', 'rsk_this_key_does_not_exist_000000000000');
    await page.click('#login-form button[type="submit"]');
    const msg = await page.waitForFunction(() => {
      const t = document.querySelector('#login-error')?.textContent || '';
      return t.length > 0 && t;
    });
    const text = await msg.jsonValue();
    console.log(`  message: ${text}`);
    check(/refused this key/.test(text) && /Invalid token/.test(text), `unclear refusal: ${text}`);
    check((await page.evaluate(() => sessionStorage.getItem('radstream.credential'))) === null, 'a refused key was kept');
    check((await page.locator('#rows').count()) === 0, 'the worklist is shown to a refused key');
    await page.context().close();
  }

  step('an admin logs in and sees the worklist');
  const page = await tab(b);
  await signIn(page, ADMIN);
  await page.waitForSelector('#rows tr[data-study-uid]');
  await page.waitForSelector('#conn[data-state="live"]');
  const before = await page.locator('#rows tr[data-study-uid]').count();
  check(before >= 2, `expected the two earlier studies, saw ${before}`);
  check((await page.locator('nav a[href="/ui/exports"]').count()) === 1, 'no Exports link for admin');
  // Keyboard: the arrow keys move between rows.
  await page.locator('#rows tr a').first().focus();
  await page.keyboard.press('ArrowDown');
  const focused = await page.evaluate(() => [...document.querySelectorAll('#rows tr')].indexOf(document.activeElement.closest('tr')));
  check(focused === 1, `ArrowDown moved the focus to row ${focused}`);
  await page.evaluate(() => {
    window.__sameDocument = true;
  });

  step('a study sent with storescu appears, gets its result without a reload, and its urgent push shows');
  const completed = completedAt();
  const port = process.env.RS_DICOM_PORT;
  await storescu(port);
  await page.waitForSelector(`#rows tr[data-study-uid="${STUDY}"]`, { timeout: 30000 });
  const eventAt = await Promise.race([
    completed.seen,
    new Promise((_, reject) => setTimeout(() => reject(new Error('no inference.completed within 120 s')), 120000)),
  ]);
  await page.waitForFunction(
    (uid) => document.querySelector(`#rows tr[data-study-uid="${uid}"]`)?.dataset.urgency,
    STUDY,
    { polling: 'raf', timeout: 10000 },
  );
  const rowAt = Date.now();
  completed.stop();
  const lag = rowAt - eventAt;
  figure('row_updated_after_inference_completed_ms', lag);
  check(lag <= 2000, `the row took ${lag} ms after inference.completed`);
  const row = page.locator(`#rows tr[data-study-uid="${STUDY}"]`);
  const urgency = await row.getAttribute('data-urgency');
  const result = (await row.locator('td.result').textContent()).trim();
  console.log(`  row: urgency ${urgency}, result "${result}"`);
  check(/^v1/.test(result), `no result version in the row: ${result}`);
  check(urgency === 'urgent', `the effusion phantom should be urgent, is ${urgency}`);
  await page.waitForSelector(`#rows tr.alerted[data-study-uid="${STUDY}"]`, { timeout: 5000 });
  check(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
  await page.locator('#f-name').focus();
  await page.locator('#f-name').blur();
  await shot(page, 'worklist');

  step('the study page shows the rendered image, the overlay, the findings and the timeline');
  // The overlay is made after the result: wait until the node has indexed it.
  await until('the overlay series', async () => {
    const d = await api(`/v1/studies/${STUDY}`, ADMIN);
    return d.series.some((s) => s.series_number === 9902);
  });
  await row.locator('a.study-link').click();
  await page.waitForURL(`**/ui/studies/${STUDY}`);
  await page.waitForSelector('#images figure.image.loaded', { timeout: 30000 });
  await page.waitForSelector('#overlays figure.image.loaded', { timeout: 30000 });
  const natural = await page.$eval('#images figure.image img', (img) => img.naturalWidth);
  check(natural > 100, `rendered image ${natural} px wide`);
  check((await page.locator('#images svg.marks circle').count()) > 0, 'no landmark drawn over the image');
  check((await page.locator('#images svg.marks polygon.lung').count()) >= 2, 'no lung contour drawn over the image');
  const findings = await page.locator('#findings table.findings tbody tr').count();
  check(findings >= 5, `only ${findings} findings listed`);
  check((await page.locator('#findings').textContent()).includes('synthetic-only'), 'validation status missing');
  await page.waitForSelector('#timeline li[data-kind="job.finished"]');
  const kinds = await page.$$eval('#timeline li', (lis) => lis.map((l) => l.dataset.kind));
  for (const k of ['association', 'study.complete', 'job.started', 'job.finished', 'inference.completed']) {
    check(kinds.includes(k), `timeline lacks ${k}: ${kinds.join(', ')}`);
  }
  const node = await page.locator('#timeline li[data-kind="job.started"] .tl-node').textContent();
  check(/^node /.test(node), `job start without its node: ${node}`);
  check((await page.locator('#reprocess').count()) === 1, 'no Reprocess button for admin');
  await page.locator('#show-marks').uncheck();
  check(await page.$eval('#images', (e) => e.classList.contains('hide-marks')), 'the toggle does not hide the marks');
  await page.locator('#show-marks').check();
  await shot(page, 'study', { fullPage: true, clip: { x: 0, y: 0, width: 1400, height: 1500 } });
  if (SHOTS) await page.locator('section:has(#h-timeline)').screenshot({ path: join(SHOTS, 'study-timeline.png') });

  step('Reprocess makes result v2, which the open page shows');
  await page.locator('#reprocess').click();
  await page.waitForFunction(() => /Job \d+ queued/.test(document.querySelector('.action-status')?.textContent || ''));
  await page.waitForSelector('#versions tbody tr:nth-child(2)', { timeout: 60000 });
  const versions = await page.$$eval('#versions tbody th', (ths) => ths.map((t) => t.textContent));
  check(versions[0] === 'v2' && versions[1] === 'v1', `versions shown: ${versions}`);

  step('a dead export is retried from the exports page');
  const dead = await until('a dead export', async () => {
    const rows = await api(`/v1/exports?state=dead&study_uid=${STUDY}`, ADMIN);
    return rows.items[0];
  });
  await page.goto(`${BASE}/ui/exports`);
  await page.selectOption('#x-state', 'dead');
  const retry = page.locator(`button[data-action="retry"][data-export-id="${dead.id}"]`);
  await retry.waitFor();
  await retry.click();
  await page.waitForFunction((id) => document.querySelector('.action-status')?.textContent.includes(`Export ${id} is now pending`), dead.id);
  const after = await api(`/v1/exports?study_uid=${STUDY}`, ADMIN);
  const again = after.items.find((x) => x.id === dead.id);
  check(again.updated_at > dead.updated_at && (again.state === 'pending' || again.attempts >= 1), `export ${dead.id} was not queued again: ${JSON.stringify(again)}`);

  step('OHIF opens the study and lists its SR and SEG series');
  await page.goto(`${BASE}/ohif/viewer?StudyInstanceUIDs=${STUDY}`);
  await page.waitForFunction(
    () => /AI result \(unverified\)[\s\S]{0,40}S:\s*9901/.test(document.body.innerText) && /S:\s*9903/.test(document.body.innerText),
    null,
    { timeout: 60000 },
  );
  const text = await page.evaluate(() => document.body.innerText);
  check(/\bSR\b/.test(text), 'no SR series listed');
  check(/\bSEG\b/.test(text), `no SEG series listed: ${text.slice(0, 400)}`);
  // OHIF's first-visit tour covers the image: dismiss it when it shows.
  await page
    .getByText('Skip all')
    .first()
    .click({ timeout: 10000 })
    .catch(() => console.log('  (no OHIF tour to dismiss)'));
  await page.waitForFunction(() => [...document.querySelectorAll('canvas')].some((c) => c.width > 200), null, { timeout: 30000 });
  await shot(page, 'ohif');
  await page.context().close();

  step('a key with only results:read sees no admin buttons');
  {
    const reader = await tab(b);
    await signIn(reader, READER);
    await reader.waitForSelector('#rows tr[data-study-uid]');
    check((await reader.locator('nav a[href="/ui/exports"]').count()) === 0, 'Exports link shown to a reader');
    check((await reader.locator('nav a[href="/ui/audit"]').count()) === 0, 'Audit link shown to a reader');
    await reader.goto(`${BASE}/ui/studies/${STUDY}`);
    await reader.waitForSelector('#findings table.findings');
    check((await reader.locator('#reprocess').count()) === 0, 'Reprocess shown to a reader');
    check((await reader.locator('#open-ohif').count()) === 1, 'no OHIF link for a reader');
    await reader.goto(`${BASE}/ui/exports`);
    await reader.waitForSelector('main .error');
    check((await reader.locator('button[data-action]').count()) === 0, 'export buttons shown to a reader');
    await reader.context().close();
  }

  await b.close();
});
