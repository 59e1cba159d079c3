// The worklist: a page of studies from /v1/studies with the filters in the address (never the
// credential), kept live by the event stream: a study event re-reads the page, a result
// updates its row at once, and a study.urgent push makes the row stand out until opened.

import {
  announce,
  dicomDate,
  el,
  errorBox,
  getData,
  personName,
  streamEvents,
  time,
  urgencyBadge,
} from './api.js';

const URGENCIES = ['critical', 'urgent', 'standard', 'low'];
const TYPES = [
  'study.received',
  'study.complete',
  'inference.started',
  'inference.completed',
  'inference.failed',
  'study.urgent',
  'study.purged',
];
const FIELDS = ['patient_name', 'patient_id', 'from', 'to', 'status', 'modality', 'sort', 'page_size'];

function field(id, label, control) {
  control.id = id;
  return el('div', { class: 'field' }, el('label', { for: id, text: label }), control);
}

function filtersForm(params) {
  const input = (name, type = 'text', extra = {}) =>
    el('input', { name, type, value: params.get(name) || '', ...extra });
  const select = (name, options) => {
    const s = el('select', { name });
    for (const [value, text] of options) {
      s.append(el('option', { value, text, selected: (params.get(name) || '') === value }));
    }
    return s;
  };
  const wanted = (params.get('urgency') || '').split(',').filter(Boolean);
  const urg = el(
    'fieldset',
    { class: 'field urgencies' },
    el('legend', { text: 'Urgency' }),
    URGENCIES.map((u) =>
      el(
        'label',
        { class: `check urg-${u}` },
        el('input', { type: 'checkbox', name: 'urgency', value: u, checked: wanted.includes(u) }),
        ` ${u}`,
      ),
    ),
  );
  return el(
    'form',
    { id: 'filters', class: 'filters', role: 'search', 'aria-label': 'Filter studies' },
    field('f-name', 'Patient name', input('patient_name', 'search', { placeholder: 'Search names', autocomplete: 'off' })),
    field('f-pid', 'Patient ID', input('patient_id', 'text', { autocomplete: 'off' })),
    field('f-from', 'Study date from', input('from', 'date')),
    field('f-to', 'to', input('to', 'date')),
    field('f-status', 'Status', select('status', [['', 'Any'], ['receiving', 'Receiving'], ['complete', 'Complete']])),
    urg,
    field('f-mod', 'Modality', input('modality', 'text', { size: 4, maxlength: 16, autocomplete: 'off', placeholder: 'DX' })),
    field('f-sort', 'Order', select('sort', [['', 'Newest first'], ['urgency', 'Most urgent first']])),
    field('f-size', 'Per page', select('page_size', [['', '50'], ['25', '25'], ['100', '100'], ['200', '200']])),
    el('button', { type: 'reset', class: 'ghost', text: 'Clear filters' }),
  );
}

/** The filters as the address's query (also the API's, but for the page). */
function readForm(form) {
  const fd = new FormData(form);
  const p = new URLSearchParams();
  for (const name of FIELDS) {
    const v = (fd.get(name) || '').toString().trim();
    if (v) p.set(name, v);
  }
  const urg = fd.getAll('urgency');
  if (urg.length) p.set('urgency', urg.join(','));
  return p;
}

function row(s, alerted) {
  const name = personName(s.patient_name) || '(no name)';
  const tr = el(
    'tr',
    {
      class: [s.urgency ? `row-${s.urgency}` : '', alerted ? 'alerted' : ''].filter(Boolean).join(' '),
      dataset: { studyUid: s.study_uid, urgency: s.urgency || '' },
    },
    el('td', { class: 'urgency' }, urgencyBadge(s.urgency)),
    el('th', { scope: 'row' }, el('a', { href: `/ui/studies/${s.study_uid}`, class: 'study-link' }, name)),
    el('td', { text: s.patient_id || '' }),
    el('td', { text: dicomDate(s.study_date) }),
    el('td', { text: (s.modalities || []).join(', ') }),
    el('td', { class: 'desc', text: s.study_description || '' }),
    el('td', {}, el('span', { class: `state state-${s.status}`, text: s.status })),
    el(
      'td',
      { class: 'result' },
      s.result_version ? `v${s.result_version} · ${time(s.result_at).slice(11)}` : s.status === 'complete' ? 'analysing…' : '',
    ),
    el('td', { class: 'num', text: String(s.num_instances) }),
    el('td', { text: time(s.last_received_at) }),
  );
  return tr;
}

export function renderWorklist(main, who) {
  document.title = 'Worklist · radstream';
  const params = new URLSearchParams(location.search);
  let page = Math.max(1, Number(params.get('page')) || 1);
  const form = filtersForm(params);
  const summary = el('p', { id: 'summary', class: 'summary', role: 'status' });
  const tbody = el('tbody', { id: 'rows' });
  const table = el(
    'table',
    { class: 'worklist', 'aria-describedby': 'summary' },
    el('caption', { class: 'visually-hidden', text: 'Studies, newest or most urgent first' }),
    el(
      'thead',
      {},
      el(
        'tr',
        {},
        ['Urgency', 'Patient', 'Patient ID', 'Study date', 'Modality', 'Description', 'Status', 'Result', 'Images', 'Last received'].map((h) =>
          el('th', { scope: 'col', text: h }),
        ),
      ),
    ),
    tbody,
  );
  const prev = el('button', { type: 'button', class: 'ghost', text: '← Previous' });
  const next = el('button', { type: 'button', class: 'ghost', text: 'Next →' });
  const pageInfo = el('span', { class: 'muted' });
  const error = el('div');
  main.replaceChildren(
    el('div', { class: 'page-head' }, el('h1', { text: 'Worklist' })),
    form,
    error,
    summary,
    el('div', { class: 'table-wrap' }, table),
    el('nav', { class: 'pager', 'aria-label': 'Pages' }, prev, pageInfo, next),
  );

  const alerted = new Set();
  let loads = 0;
  let inFlight = null;
  let again = false;

  async function load() {
    if (inFlight) {
      again = true;
      return inFlight;
    }
    const filters = readForm(form);
    const query = new URLSearchParams(filters);
    query.set('page', String(page));
    if (!query.has('page_size')) query.set('page_size', '50');
    const address = new URLSearchParams(filters);
    if (page > 1) address.set('page', String(page));
    history.replaceState(null, '', `/ui/${address.toString() ? `?${address}` : ''}`);
    inFlight = (async () => {
      try {
        const data = await getData(`/v1/studies?${query}`);
        error.replaceChildren();
        const focusedUid = document.activeElement?.closest?.('tr')?.dataset.studyUid;
        tbody.replaceChildren(...data.items.map((s) => row(s, alerted.has(s.study_uid))));
        if (data.items.length === 0) {
          tbody.append(el('tr', {}, el('td', { colspan: 10, class: 'empty', text: 'No study matches these filters.' })));
        }
        if (focusedUid) tbody.querySelector(`tr[data-study-uid="${CSS.escape(focusedUid)}"] a`)?.focus();
        const pages = Math.max(1, Math.ceil(data.total / data.page_size));
        summary.textContent = `${data.total} ${data.total === 1 ? 'study' : 'studies'}`;
        pageInfo.textContent = `Page ${data.page} of ${pages}`;
        prev.disabled = data.page <= 1;
        next.disabled = data.page >= pages;
      } catch (e) {
        error.replaceChildren(errorBox(`The worklist could not be read: ${e.message}`));
      } finally {
        loads += 1;
        document.body.dataset.worklistLoads = String(loads);
        inFlight = null;
        if (again) {
          again = false;
          load();
        }
      }
    })();
    return inFlight;
  }

  let debounce = null;
  const reload = (ms) => {
    clearTimeout(debounce);
    debounce = setTimeout(load, ms);
  };
  form.addEventListener('input', () => {
    page = 1;
    reload(200);
  });
  form.addEventListener('change', () => {
    page = 1;
    reload(0);
  });
  form.addEventListener('reset', () => {
    setTimeout(() => {
      page = 1;
      load();
    }, 0);
  });
  form.addEventListener('submit', (e) => e.preventDefault());
  prev.addEventListener('click', () => {
    page = Math.max(1, page - 1);
    load();
  });
  next.addEventListener('click', () => {
    page += 1;
    load();
  });

  // Arrow keys move between rows; Enter follows the row's link.
  tbody.addEventListener('keydown', (e) => {
    const tr = e.target.closest('tr');
    if (!tr) return;
    let target = null;
    if (e.key === 'ArrowDown' || e.key === 'j') target = tr.nextElementSibling;
    else if (e.key === 'ArrowUp' || e.key === 'k') target = tr.previousElementSibling;
    else if (e.key === 'Home') target = tbody.firstElementChild;
    else if (e.key === 'End') target = tbody.lastElementChild;
    if (target) {
      e.preventDefault();
      target.querySelector('a')?.focus();
    }
  });
  tbody.addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-study-uid]');
    if (tr && !e.target.closest('a')) tr.querySelector('a')?.click();
  });

  const conn = document.getElementById('conn');
  streamEvents({
    query: `?type=${TYPES.join(',')}`,
    onState(state) {
      const text = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', stopped: 'Offline' }[state];
      conn.textContent = text;
      conn.className = `conn conn-${state}`;
      conn.dataset.state = state;
      if (state === 'live') reload(0);
    },
    onEvent(ev) {
      const uid = ev.data.study_uid;
      const tr = uid ? tbody.querySelector(`tr[data-study-uid="${CSS.escape(uid)}"]`) : null;
      if (ev.type === 'inference.completed' && tr) {
        // The row shows its result at once; the page is re-read after.
        const urgency = ev.data.data?.urgency;
        if (urgency) {
          tr.querySelector('td.urgency').replaceChildren(urgencyBadge(urgency));
          tr.dataset.urgency = urgency;
          tr.className = `row-${urgency}${alerted.has(uid) ? ' alerted' : ''}`;
        }
        const v = ev.data.data?.result_version;
        if (v) tr.querySelector('td.result').textContent = `v${v} · ${time(ev.data.time).slice(11)}`;
      }
      if (ev.type === 'study.urgent' && uid) {
        alerted.add(uid);
        if (tr) tr.classList.add('alerted');
        const who = tr ? tr.querySelector('a').textContent : 'a study';
        announce(`${ev.data.data?.urgency || 'Urgent'} result for ${who}`);
      }
      reload(ev.type === 'inference.completed' || ev.type === 'study.urgent' ? 0 : 150);
    },
  });
  load();
}
