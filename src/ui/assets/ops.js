// Operations pages: the export outbox (retry and cancel with admin), the installed models,
// health with the node's key metrics as small live charts, and the audit log (admin).

import { can, el, errorBox, getData, request, time } from './api.js';
import { metric, sparkline } from './charts.js';

function table(caption, headers, rows) {
  return el(
    'div',
    { class: 'table-wrap' },
    el(
      'table',
      { class: 'compact' },
      el('caption', { class: caption ? '' : 'visually-hidden', text: caption || '' }),
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col', text: h })))),
      el('tbody', {}, rows),
    ),
  );
}

function needsAdmin(main, title) {
  main.replaceChildren(el('h1', { text: title }), errorBox('This page needs a credential with the admin scope.'));
}

export function renderExports(main, who) {
  document.title = 'Exports · radstream';
  if (!can(who, 'admin')) {
    needsAdmin(main, 'Exports');
    return;
  }
  const state = el(
    'select',
    { id: 'x-state', name: 'state' },
    [['', 'All'], ['pending', 'Pending'], ['sent', 'Sent'], ['dead', 'Dead'], ['cancelled', 'Cancelled']].map(([v, t]) => el('option', { value: v, text: t })),
  );
  const status = el('p', { role: 'status', class: 'action-status' });
  const box = el('div', { id: 'exports' });
  main.replaceChildren(
    el('h1', { text: 'Export outbox' }),
    el('form', { class: 'filters', role: 'search', 'aria-label': 'Filter exports' }, el('div', { class: 'field' }, el('label', { for: 'x-state', text: 'State' }), state)),
    status,
    box,
  );
  const act = async (id, action) => {
    try {
      const resp = await request(`/v1/exports/${id}/${action}`, { method: 'POST' });
      const row = (await resp.json()).data;
      status.textContent = `Export ${id} is now ${row.state}.`;
    } catch (e) {
      status.textContent = `Export ${id} could not be ${action === 'retry' ? 'retried' : 'cancelled'}: ${e.message}`;
    }
    load();
  };
  async function load() {
    try {
      const q = state.value ? `&state=${state.value}` : '';
      const page = await getData(`/v1/exports?limit=200${q}`);
      box.replaceChildren(
        page.items.length
          ? table(
              null,
              ['Id', 'Study', 'Destination', 'Output', 'State', 'Attempts', 'Last error', 'Updated', 'Actions'],
              page.items.map((x) => {
                const actions = el('td', { class: 'row-actions' });
                if (['dead', 'cancelled', 'pending'].includes(x.state)) {
                  actions.append(el('button', { type: 'button', class: 'small', dataset: { action: 'retry', exportId: x.id }, 'aria-label': `Retry export ${x.id}`, text: 'Retry', onclick: () => act(x.id, 'retry') }));
                }
                if (x.state === 'pending') {
                  actions.append(el('button', { type: 'button', class: 'small ghost', dataset: { action: 'cancel', exportId: x.id }, 'aria-label': `Cancel export ${x.id}`, text: 'Cancel', onclick: () => act(x.id, 'cancel') }));
                }
                return el(
                  'tr',
                  { dataset: { exportId: x.id, state: x.state } },
                  el('th', { scope: 'row', text: String(x.id) }),
                  el('td', {}, el('a', { href: `/ui/studies/${x.study_uid}`, class: 'uid', text: `…${x.study_uid.slice(-12)}` })),
                  el('td', { text: `${x.destination} (${x.kind})` }),
                  el('td', { text: x.output }),
                  el('td', {}, el('span', { class: `state state-${x.state}`, text: x.state })),
                  el('td', { class: 'num', text: `${x.attempts} / ${x.max_attempts}` }),
                  el('td', { class: 'err', text: x.last_error || '' }),
                  el('td', { text: time(x.updated_at) }),
                  actions,
                );
              }),
            )
          : el('p', { class: 'muted', text: 'No export in this state.' }),
      );
    } catch (e) {
      box.replaceChildren(errorBox(e.message));
    }
  }
  state.addEventListener('change', load);
  load();
  setInterval(load, 5000);
}

export async function renderModels(main) {
  document.title = 'Models · radstream';
  main.replaceChildren(el('h1', { text: 'Installed models' }));
  try {
    const models = await getData('/v1/models');
    for (const m of models) {
      main.append(
        el(
          'section',
          { class: 'card model', 'aria-labelledby': `m-${m.id}` },
          el('h2', { id: `m-${m.id}` }, `${m.name} `, el('span', { class: 'muted', text: `${m.id} ${m.version}` })),
          el(
            'dl',
            { class: 'facts' },
            [
              ['Task', m.task],
              ['Provider', m.provider],
              ['Device', m.device],
              ['Workers', String(m.workers)],
              ['Input', m.input.join(' × ')],
              ['Validation', m.validation?.status || ''],
              ['Clinical use', m.not_for_clinical_use ? 'not for clinical use' : 'yes'],
              ['Manufacturer', m.manufacturer],
            ].map(([k, v]) => el('div', {}, el('dt', { text: k }), el('dd', { text: v || '' }))),
          ),
          m.intended_use ? el('p', { class: 'muted', text: m.intended_use }) : null,
          table(
            'Members',
            ['File', 'SHA-256'],
            [...m.members, ...(m.gate ? [{ ...m.gate, file: `${m.gate.file || m.gate.path || 'gate'} (gate)` }] : [])].map((f) =>
              el('tr', {}, el('th', { scope: 'row', text: f.file || f.path || f.name || '' }), el('td', {}, el('code', { class: 'uid', text: f.sha256 || '' }))),
            ),
          ),
        ),
      );
    }
  } catch (e) {
    main.append(errorBox(e.message));
  }
}

export function renderHealth(main, who) {
  document.title = 'Health · radstream';
  const summary = el('div', { id: 'health' });
  const charts = el('div', { class: 'charts' });
  main.replaceChildren(el('h1', { text: 'Health' }), summary, el('h2', { text: 'Key metrics (every 5 s)' }), charts);
  const chart = (label, unit) => {
    const f = el('figure', { class: 'chart card' });
    charts.append(f);
    return sparkline(f, { label, unit });
  };
  const queued = chart('Jobs queued');
  const running = chart('Jobs running');
  const admin = can(who, 'admin');
  const ingest = admin ? chart('Ingest rate', ' inst/s') : null;
  const latency = admin ? chart('Receipt to result (mean)', ' s') : null;
  const inference = admin ? chart('Inference (mean)', ' s') : null;
  if (!admin) charts.append(el('p', { class: 'muted', text: 'Ingest rate and latencies come from /metrics, which needs the admin scope.' }));
  let prev = null;
  async function tick() {
    try {
      const resp = await fetch('/health', { cache: 'no-store' });
      const h = await resp.json();
      const good = (status) => ['ok', 'up', 'healthy', 'loaded'].includes(status);
      const part = (name, p, text = '') => el('div', { class: `health-part ${good(p.status) ? 'ok' : 'bad'}` }, el('strong', { text: name }), ` ${p.status}${text}`);
      summary.replaceChildren(
        el(
          'div',
          { class: 'health-grid' },
          part('Node', h, ` (v${h.version || ''}${h.node?.id ? `, ${h.node.id}` : ''})`),
          h.database ? part('Database', h.database, h.database.backend ? ` (${h.database.backend})` : '') : null,
          h.storage ? part('Storage', h.storage, `, ${(h.storage.free_bytes / 1e9).toFixed(1)} GB free`) : null,
          h.dicom ? part('DICOM', h.dicom, ` ${h.dicom.ae_title || ''}@${h.dicom.address || ''}, ${h.dicom.open_associations ?? 0} open`) : null,
          (h.models || []).map((m) => part(`Model ${m.id}`, m, m.provider ? ` on ${m.provider}` : '')),
        ),
      );
      if (Array.isArray(h.errors) && h.errors.length) summary.append(el('ul', { class: 'error' }, h.errors.map((e) => el('li', { text: String(e) }))));
    } catch (e) {
      summary.replaceChildren(errorBox(`Health unreadable: ${e.message}`));
    }
    try {
      const jobs = await getData('/v1/jobs?limit=1');
      queued.push(jobs.queued);
      running.push(jobs.running);
    } catch (_) {
      queued.push(NaN);
      running.push(NaN);
    }
    if (admin) {
      try {
        const text = await (await request('/metrics', { accept: 'text/plain' })).text();
        const now = {
          at: Date.now(),
          stored: metric(text, 'radstream_dicom_instances_stored_total'),
          r2rSum: metric(text, 'radstream_receipt_to_result_seconds_sum'),
          r2rCount: metric(text, 'radstream_receipt_to_result_seconds_count'),
          infSum: metric(text, 'radstream_inference_duration_seconds_sum'),
          infCount: metric(text, 'radstream_inference_duration_seconds_count'),
        };
        if (prev) {
          const dt = (now.at - prev.at) / 1000;
          ingest.push(((now.stored ?? 0) - (prev.stored ?? 0)) / dt);
          const mean = (s, c) => (c ? s / c : NaN);
          latency.push(mean(now.r2rSum, now.r2rCount));
          inference.push(mean(now.infSum, now.infCount));
        }
        prev = now;
      } catch (_) {
        ingest.push(NaN);
      }
    }
  }
  tick();
  setInterval(tick, 5000);
}

export async function renderAudit(main, who) {
  document.title = 'Audit · radstream';
  if (!can(who, 'admin')) {
    needsAdmin(main, 'Audit log');
    return;
  }
  main.replaceChildren(el('h1', { text: 'Audit log' }));
  try {
    const page = await getData('/v1/audit?limit=200');
    main.append(
      table(
        `Newest ${page.count} reads of patient data`,
        ['Time', 'Who', 'How', 'Action', 'Patient', 'Study', 'From', 'Status'],
        page.items.map((a) =>
          el(
            'tr',
            {},
            el('td', { text: time(a.at) }),
            el('td', { text: a.principal }),
            el('td', { text: a.auth_method }),
            el('td', {}, el('code', { text: a.action })),
            el('td', { text: a.patient_id || '' }),
            el('td', {}, a.study_uid ? el('a', { href: `/ui/studies/${a.study_uid}`, class: 'uid', text: `…${a.study_uid.slice(-12)}` }) : ''),
            el('td', { text: a.remote_addr || '' }),
            el('td', { class: 'num', text: a.status ?? '' }),
          ),
        ),
      ),
    );
  } catch (e) {
    main.append(errorBox(e.message));
  }
}
