// A study's page: header, every image rendered by the node (WADO-RS rendered) with the
// lung contours and landmarks drawn over it (toggle), the node's overlay images, findings and
// measurements per model, result versions, the timeline, and the way to OHIF and to the REST,
// FHIR and DICOMweb views of the same study.

import {
  ApiError,
  can,
  dicomDate,
  duration,
  el,
  errorBox,
  getData,
  imageURL,
  personName,
  request,
  streamEvents,
  time,
  urgencyBadge,
} from './api.js';

// Series numbers of the node's own outputs (guide: pacs/results-to-pacs.md).
const SR_SERIES = 9901;
const OVERLAY_SERIES = 9902;
const SEG_SERIES = 9903;
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  return n;
}

const pct = (p) => (p === null || p === undefined ? '' : `${(p * 100).toFixed(1)} %`);

function dl(pairs) {
  return el(
    'dl',
    { class: 'facts' },
    pairs
      .filter(([, v]) => v !== '' && v !== null && v !== undefined)
      .map(([k, v]) => el('div', {}, el('dt', { text: k }), el('dd', {}, v))),
  );
}

function renderedPath(study, series, sop) {
  return `/dicomweb/studies/${study}/series/${series}/instances/${sop}/rendered`;
}

/** The contours and points the models gave for one image, in its pixel coordinates. */
function marks(image, rows, columns) {
  const g = svg('svg', { viewBox: `0 0 ${columns} ${rows}`, class: 'marks', 'aria-hidden': 'true', preserveAspectRatio: 'none' });
  const lungs = image?.segmentation?.lungs;
  let n = 0;
  for (const side of ['right', 'left']) {
    const c = lungs?.[side]?.contour;
    if (c && c.length > 2) {
      g.append(svg('polygon', { points: c.map(([x, y]) => `${x},${y}`).join(' '), class: `lung lung-${side}` }));
      n += 1;
    }
  }
  // Landmark models give points as fractions of the image; the segmenter's CTR points are in
  // pixels.
  const scale = (pts) => {
    const fractions = pts.length && pts.every((p) => p.x <= 1.5 && p.y <= 1.5);
    return pts.map((p) => ({ ...p, x: fractions ? p.x * columns : p.x, y: fractions ? p.y * rows : p.y }));
  };
  const points = [...scale(lungs?.ctr_points || []), ...scale(image?.landmarks?.points || [])];
  const byClass = new Map(points.map((p) => [p.class, p]));
  for (const [a, b, cls] of [['thorax_right', 'thorax_left', 'thoracic'], ['heart_right', 'heart_left', 'cardiac']]) {
    const p = byClass.get(a);
    const q = byClass.get(b);
    if (p && q) g.append(svg('line', { x1: p.x, y1: p.y, x2: q.x, y2: q.y, class: `width ${cls}` }));
  }
  const r = Math.max(columns, rows) / 120;
  for (const p of points) {
    const c = svg('circle', { cx: p.x, cy: p.y, r, class: 'point' });
    c.append(svg('title', {}));
    c.firstChild.textContent = p.class;
    g.append(c);
    n += 1;
  }
  return n > 0 ? g : null;
}

function figure(studyUid, series, inst, caption, image) {
  const img = el('img', { alt: caption, class: 'frame', loading: 'lazy' });
  const box = el('div', { class: 'frame-box' }, img);
  const status = el('figcaption', {}, caption);
  const fig = el('figure', { class: 'image', dataset: { sopInstanceUid: inst.sop_instance_uid } }, box, status);
  imageURL(renderedPath(studyUid, series.series_uid, inst.sop_instance_uid))
    .then((url) => {
      img.src = url;
      img.addEventListener('load', () => fig.classList.add('loaded'), { once: true });
    })
    .catch((e) => status.append(errorBox(`Not rendered: ${e.message}`)));
  if (image && inst.rows && inst.columns) {
    const m = marks(image, inst.rows, inst.columns);
    if (m) box.append(m);
  }
  return fig;
}

function findings(result) {
  const models = el(
    'table',
    { class: 'compact' },
    el('caption', { text: 'Models' }),
    el('thead', {}, el('tr', {}, ['Model', 'Task', 'Validation', 'Status', 'Images', 'Time'].map((h) => el('th', { scope: 'col', text: h })))),
    el(
      'tbody',
      {},
      (result.models || []).map((m) =>
        el(
          'tr',
          {},
          el('th', { scope: 'row', text: `${m.name || m.id} ${m.version}` }),
          el('td', { text: m.task }),
          el('td', {}, el('span', { class: `validation v-${m.validation_status}`, text: m.validation_status })),
          el('td', { text: m.status + (m.error ? `: ${m.error}` : '') }),
          el('td', { class: 'num', text: String(m.images_analysed) }),
          el('td', { class: 'num', text: duration(m.elapsed_ms) }),
        ),
      ),
    ),
  );
  const labels = (result.summary?.labels || []).slice().sort((a, b) => b.probability - a.probability);
  const table = el(
    'table',
    { class: 'compact findings' },
    el('caption', { text: `Findings (${result.model?.name || result.model?.id || ''}, ${result.model?.validation_status || 'unknown'})` }),
    el('thead', {}, el('tr', {}, ['Finding', 'Probability', 'Present', 'Images positive'].map((h) => el('th', { scope: 'col', text: h })))),
    el(
      'tbody',
      {},
      labels.map((l) =>
        el(
          'tr',
          { class: l.present ? 'present' : '' },
          el('th', { scope: 'row', text: l.name }),
          el('td', { class: 'num' }, el('meter', { min: 0, max: 1, value: l.probability, 'aria-hidden': 'true' }), ' ', pct(l.probability)),
          el('td', { text: l.present ? 'yes' : 'no' }),
          el('td', { class: 'num', text: String(l.images_positive) }),
        ),
      ),
    ),
  );
  const measurements = (result.measurements || []).length
    ? el(
        'table',
        { class: 'compact' },
        el('caption', { text: 'Measurements' }),
        el('thead', {}, el('tr', {}, ['Measurement', 'Value', 'Model', 'Method', 'Validation'].map((h) => el('th', { scope: 'col', text: h })))),
        el(
          'tbody',
          {},
          result.measurements.map((m) =>
            el(
              'tr',
              {},
              el('th', { scope: 'row', text: m.key.replaceAll('_', ' ') }),
              el('td', { class: 'num', text: `${Number(m.value).toFixed(m.unit === 'mm2' ? 0 : 3)} ${m.unit}` }),
              el('td', { text: m.model_id }),
              el('td', { text: m.method }),
              el('td', {}, el('span', { class: `validation v-${m.validation_status}`, text: m.validation_status })),
            ),
          ),
        ),
      )
    : null;
  const s = result.summary || {};
  const triage = result.triage?.reasons?.length ? el('ul', { class: 'reasons' }, result.triage.reasons.map((r) => el('li', { text: r }))) : null;
  return el(
    'div',
    { class: 'findings-block' },
    dl([
      ['Urgency', urgencyBadge(result.urgency)],
      ['Status', result.status],
      ['Confidence tier', s.confidence || '—'],
      ['Review advised', s.should_review ? 'yes' : 'no'],
      ['Images analysed', `${s.images_analysed ?? 0} of ${s.images_total ?? 0}`],
      ['Findings present', (s.findings_present || []).join(', ') || 'none'],
    ]),
    triage,
    table,
    measurements,
    models,
  );
}

function timeline(entries) {
  if (!entries.length) return el('p', { class: 'muted', text: 'Nothing recorded yet.' });
  return el(
    'ol',
    { class: 'timeline' },
    entries.map((e) =>
      el(
        'li',
        { class: `tl tl-${e.kind.replaceAll('.', '-')}`, dataset: { kind: e.kind } },
        el('time', { datetime: e.time, text: time(e.time) }),
        el('span', { class: 'tl-title', text: e.title }),
        e.node ? el('span', { class: 'tl-node', text: `node ${e.node}` }) : null,
        e.duration_ms !== null && e.duration_ms !== undefined ? el('span', { class: 'tl-dur', text: duration(e.duration_ms) }) : null,
        e.detail ? el('span', { class: 'tl-detail', text: e.detail }) : null,
      ),
    ),
  );
}

function jsonViewer(label, path) {
  const pre = el('pre', { class: 'json', tabindex: '0' });
  const details = el('details', { class: 'view' }, el('summary', {}, label, ' ', el('code', { text: path })), pre);
  details.addEventListener('toggle', async () => {
    if (!details.open || pre.dataset.loaded) return;
    pre.textContent = 'Loading…';
    try {
      const resp = await request(path, { accept: 'application/json, application/dicom+json, application/fhir+json' });
      const text = await resp.text();
      try {
        pre.textContent = JSON.stringify(JSON.parse(text), null, 2);
      } catch (_) {
        pre.textContent = text;
      }
      pre.dataset.loaded = '1';
    } catch (e) {
      pre.textContent = `Refused: ${e.message}`;
    }
  });
  return details;
}

export async function renderStudy(main, who, uid) {
  document.title = 'Study · radstream';
  main.replaceChildren(el('p', { class: 'muted', text: 'Loading the study…' }));
  let detail;
  try {
    detail = await getData(`/v1/studies/${uid}`);
  } catch (e) {
    main.replaceChildren(el('h1', { text: 'Study' }), errorBox(e.status === 404 ? `No study ${uid} on this node.` : e.message));
    return;
  }
  const name = personName(detail.patient_name) || '(no name)';
  document.title = `${name} · radstream`;

  const status = el('p', { class: 'action-status', role: 'status' });
  const actions = el(
    'div',
    { class: 'actions' },
    el('a', { class: 'button primary', href: `/ohif/viewer?StudyInstanceUIDs=${encodeURIComponent(uid)}`, id: 'open-ohif' }, 'Open in OHIF'),
  );
  if (can(who, 'inference:write')) {
    const reprocess = el('button', { type: 'button', id: 'reprocess', text: 'Reprocess' });
    reprocess.addEventListener('click', async () => {
      reprocess.disabled = true;
      try {
        const resp = await request(`/v1/studies/${uid}/reprocess`, { method: 'POST', body: {} });
        const job = (await resp.json()).data;
        status.textContent = `Job ${job.id} queued; the page updates when its result is stored.`;
      } catch (e) {
        status.textContent = `Reprocess refused: ${e.message}`;
      } finally {
        reprocess.disabled = false;
      }
    });
    actions.append(reprocess);
  }

  const contoursToggle = el('input', { type: 'checkbox', id: 'show-marks', checked: true });
  const images = el('div', { class: 'images', id: 'images' });
  const overlays = el('div', { class: 'images', id: 'overlays' });
  const findingsBox = el('div', { id: 'findings' });
  const versionsBox = el('div', { id: 'versions' });
  const timelineBox = el('div', { id: 'timeline' });

  main.replaceChildren(
    el(
      'header',
      { class: 'study-head' },
      el('p', { class: 'crumbs' }, el('a', { href: '/ui/', text: 'Worklist' }), ' / study'),
      el('h1', {}, name, ' ', urgencyBadge(detail.urgency)),
      dl([
        ['Patient ID', detail.patient_id],
        ['Birth date', dicomDate(detail.patient_birth_date)],
        ['Sex', detail.patient_sex],
        ['Age', detail.patient_age],
        ['Accession', detail.accession_number],
        ['Study date', `${dicomDate(detail.study_date)} ${detail.study_time ? detail.study_time.slice(0, 2) + ':' + detail.study_time.slice(2, 4) : ''}`.trim()],
        ['Description', detail.study_description],
        ['Modalities', (detail.modalities || []).join(', ')],
        ['Status', detail.status],
        ['Images', String(detail.num_instances)],
        ['Study UID', el('code', { class: 'uid', text: uid })],
      ]),
      actions,
      status,
    ),
    el(
      'section',
      { 'aria-labelledby': 'h-images' },
      el('div', { class: 'section-head' }, el('h2', { id: 'h-images', text: 'Images' }), el('label', { class: 'check' }, contoursToggle, ' Show contours and landmarks')),
      images,
    ),
    el('section', { 'aria-labelledby': 'h-overlay' }, el('h2', { id: 'h-overlay', text: 'Node overlay' }), overlays),
    el('section', { 'aria-labelledby': 'h-findings' }, el('h2', { id: 'h-findings', text: 'Findings and measurements' }), findingsBox),
    el('section', { 'aria-labelledby': 'h-versions' }, el('h2', { id: 'h-versions', text: 'Result versions' }), versionsBox),
    el('section', { 'aria-labelledby': 'h-timeline' }, el('h2', { id: 'h-timeline', text: 'Timeline' }), timelineBox),
    el(
      'section',
      { 'aria-labelledby': 'h-views' },
      el('h2', { id: 'h-views', text: 'The same study elsewhere' }),
      jsonViewer('REST', `/v1/studies/${uid}`),
      jsonViewer('Result', `/v1/studies/${uid}/results`),
      jsonViewer('FHIR DiagnosticReport', `/fhir/DiagnosticReport?identifier=${uid}`),
      jsonViewer('DICOMweb series (QIDO-RS)', `/dicomweb/studies/${uid}/series`),
    ),
  );
  contoursToggle.addEventListener('change', () => images.classList.toggle('hide-marks', !contoursToggle.checked));

  let shownVersion = null;
  async function showResult(version) {
    let result = null;
    try {
      result = await getData(`/v1/studies/${uid}/results${version ? `?version=${version}` : ''}`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) {
        findingsBox.replaceChildren(errorBox(e.message));
        return null;
      }
    }
    shownVersion = result?.version ?? null;
    findingsBox.replaceChildren(result ? findings(result) : el('p', { class: 'muted', text: 'No result yet.' }));
    return result;
  }

  async function showImages(result) {
    const byImage = new Map((result?.images || []).map((i) => [i.sop_instance_uid, i]));
    const source = [];
    const outputs = [];
    for (const s of detail.series) {
      if (s.series_number === OVERLAY_SERIES) {
        for (const inst of s.instances) outputs.push(figure(uid, s, inst, `Overlay: ${s.series_description || 'AI result'}`, null));
      } else if (s.series_number !== SR_SERIES && s.series_number !== SEG_SERIES && !['SR', 'SEG', 'KO', 'PR'].includes(s.modality)) {
        for (const inst of s.instances) {
          const img = byImage.get(inst.sop_instance_uid);
          const caption = `${s.modality || ''} ${s.view_position || ''} #${inst.instance_number ?? ''}${img ? ` · ${img.status}` : ''}`.trim();
          source.push(figure(uid, s, inst, caption, img));
        }
      }
    }
    images.replaceChildren(...(source.length ? source : [el('p', { class: 'muted', text: detail.purged_at ? 'The received images were removed (retention).' : 'No image.' })]));
    overlays.replaceChildren(...(outputs.length ? outputs : [el('p', { class: 'muted', text: 'No overlay yet (made after the result).' })]));
  }

  function showVersions() {
    const rows = detail.results || [];
    if (!rows.length) {
      versionsBox.replaceChildren(el('p', { class: 'muted', text: 'No result yet.' }));
      return;
    }
    versionsBox.replaceChildren(
      el(
        'table',
        { class: 'compact' },
        el('thead', {}, el('tr', {}, ['Version', 'Status', 'Urgency', 'Model', 'Stored', ''].map((h) => el('th', { scope: 'col', text: h })))),
        el(
          'tbody',
          {},
          rows.map((r) => {
            const b = el('button', { type: 'button', class: 'ghost small', text: r.version === shownVersion ? 'Shown' : 'Show', disabled: r.version === shownVersion });
            b.addEventListener('click', async () => {
              await showResult(r.version);
              showVersions();
            });
            return el(
              'tr',
              {},
              el('th', { scope: 'row', text: `v${r.version}` }),
              el('td', { text: r.status }),
              el('td', {}, urgencyBadge(r.urgency)),
              el('td', { text: `${r.model_id} ${r.model_version}` }),
              el('td', { text: time(r.created_at) }),
              el('td', {}, b),
            );
          }),
        ),
      ),
    );
  }

  async function showTimeline() {
    try {
      const t = await getData(`/v1/studies/${uid}/timeline`);
      timelineBox.replaceChildren(timeline(t.entries));
    } catch (e) {
      timelineBox.replaceChildren(errorBox(e.message));
    }
  }

  async function refresh() {
    detail = await getData(`/v1/studies/${uid}`);
    const result = await showResult(null);
    showVersions();
    await showImages(result);
    await showTimeline();
    document.body.dataset.studyLoaded = String(Number(document.body.dataset.studyLoaded || 0) + 1);
  }
  await refresh();

  let pending = null;
  streamEvents({
    query: `?study_uid=${encodeURIComponent(uid)}`,
    onState(state) {
      const conn = document.getElementById('conn');
      conn.textContent = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', stopped: 'Offline' }[state];
      conn.className = `conn conn-${state}`;
    },
    onEvent() {
      clearTimeout(pending);
      pending = setTimeout(refresh, 300);
    },
  });
}
