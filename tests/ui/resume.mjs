// The worklist's event stream after a drop: the node (a separate `radstream serve` started and
// killed here) goes away and comes back; the page shows Reconnecting…, reconnects with
// Last-Event-ID (the last event it had), goes Live and keeps updating without a reload.

import { spawn } from 'node:child_process';
import { BASE, api, browser, check, run, signIn, step, tab, until } from './lib.mjs';

const KEY = process.env.RS_ADMIN_KEY;
const FILES_1 = JSON.parse(process.env.RS_FILES_1);
const FILES_2 = JSON.parse(process.env.RS_FILES_2);

function startNode() {
  const env = { ...process.env, ...JSON.parse(process.env.RS_NODE_ENV) };
  return spawn(process.env.RS_BIN, ['serve'], { env, stdio: 'ignore' });
}

async function up() {
  await until('the node to answer /ping', async () => {
    try {
      return (await fetch(`${BASE}/ping`)).ok;
    } catch (_) {
      return false;
    }
  }, 60000, 100);
}

function storescu(files) {
  return new Promise((resolve, reject) => {
    const p = spawn('storescu', ['-aec', 'RADSTREAM', '127.0.0.1', process.env.RS_DICOM_PORT, ...files], { stdio: 'ignore' });
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`storescu exited ${code}`))));
  });
}

const urgencyOf = (page, uid) =>
  page.waitForFunction((u) => document.querySelector(`#rows tr[data-study-uid="${u}"]`)?.dataset.urgency, uid, { timeout: 120000 });

run(async () => {
  let node = startNode();
  try {
    await up();
    const b = await browser();
    const page = await tab(b);
    const streams = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname === '/v1/events') streams.push(r.headers()['last-event-id'] ?? null);
    });

    step('live worklist, first study');
    await signIn(page, KEY);
    await page.waitForSelector('#conn[data-state="live"]');
    await page.evaluate(() => {
      window.__sameDocument = true;
    });
    await storescu(FILES_1);
    const first = process.env.RS_STUDY_1;
    await page.waitForSelector(`#rows tr[data-study-uid="${first}"]`);
    await urgencyOf(page, first);
    // The page follows these types; it resumes after the newest of them it received.
    const types = 'study.received,study.complete,inference.started,inference.completed,inference.failed,study.urgent,study.purged';
    const history = await api(`/v1/events/history?limit=1000&type=${types}`, KEY);
    const maxId = Math.max(...history.items.map((e) => e.id));
    const completedId = history.items.find((e) => e.type === 'inference.completed' && e.study_uid === first).id;

    step('the node is killed: the page says so');
    node.kill('SIGKILL');
    await page.waitForSelector('#conn[data-state="reconnecting"]', { timeout: 20000 });

    step('the node is back: the page resumes with Last-Event-ID');
    node = startNode();
    await up();
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 30000 });
    const resumed = streams.slice(1).filter((h) => h !== null);
    console.log(`  event stream requests' Last-Event-ID: ${JSON.stringify(streams)}; events before the drop ${completedId}..${maxId}`);
    check(streams[0] === null, 'the first connection already had a Last-Event-ID');
    check(
      resumed.length > 0 && resumed.every((h) => Number(h) >= completedId && Number(h) <= maxId),
      `reconnected without the last event's id (${completedId}..${maxId})`,
    );

    step('updates keep coming without a reload');
    await storescu(FILES_2);
    const second = process.env.RS_STUDY_2;
    await page.waitForSelector(`#rows tr[data-study-uid="${second}"]`, { timeout: 30000 });
    await urgencyOf(page, second);
    check(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
    await b.close();
  } finally {
    node.kill('SIGKILL');
  }
});
