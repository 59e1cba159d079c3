// Talking to the node: every call carries the credential from this tab's sessionStorage in
// the Authorization header (an API key is accepted as a bearer token too); nothing puts it in
// a URL. The event stream is read with fetch for the same reason (EventSource cannot send
// headers).

const KEY = 'radstream.credential';
const ME = 'radstream.me';

export const credential = () => sessionStorage.getItem(KEY);

export function setCredential(value, me) {
  sessionStorage.setItem(KEY, value);
  sessionStorage.setItem(ME, JSON.stringify(me));
}

export function clearCredential() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(ME);
}

export function authHeaders(c = credential()) {
  return c ? { Authorization: `Bearer ${c}` } : {};
}

/** A refused or failed call, with the node's error message. */
export class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details;
  }
}

let unauthorized = () => {};
/** What to do when the stored credential stops working (expired, revoked). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

/** fetch with the credential; throws ApiError with the envelope's message on failure. */
export async function request(path, { method = 'GET', body, with: c, accept = 'application/json', signal } = {}) {
  const headers = { ...authHeaders(c ?? credential()), Accept: accept };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      signal,
      cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `The node could not be reached (${e.message})`);
  }
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    let details;
    try {
      const j = await resp.json();
      if (j && j.error) {
        message = j.error.message;
        details = j.error.details;
      }
    } catch (_) {
      // Not an envelope: keep the status line.
    }
    const err = new ApiError(resp.status, message, details);
    if (resp.status === 401 && c === undefined) unauthorized(err);
    throw err;
  }
  return resp;
}

/** The `data` of an enveloped answer. */
export async function getData(path, opts) {
  const resp = await request(path, opts);
  return (await resp.json()).data;
}

/** An image fetched with the credential, as an object URL for an <img>. */
export async function imageURL(path, accept = 'image/png') {
  const resp = await request(path, { accept });
  return URL.createObjectURL(await resp.blob());
}

/** Who the credential is (subject, scopes), asked once per tab. */
export async function me() {
  const cached = sessionStorage.getItem(ME);
  if (cached) return JSON.parse(cached);
  const who = await getData('/v1/me');
  sessionStorage.setItem(ME, JSON.stringify(who));
  return who;
}

export const can = (who, scope) => Boolean(who && who.scopes.includes(scope));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Follows /v1/events with the credential in a header, resuming after a drop with
 * Last-Event-ID (the node replays what was missed, then goes live). `onState` gets
 * 'connecting', 'live', 'reconnecting' or 'stopped'.
 */
export function streamEvents({ query = '', onEvent, onState = () => {} }) {
  let stopped = false;
  let ctrl = null;
  let last = null;
  let delay = 500;
  const dispatch = (block) => {
    let id = null;
    let type = 'message';
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'id') id = value;
      else if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
    }
    if (id !== null && id !== '') last = id;
    if (data.length === 0) return;
    let parsed;
    try {
      parsed = JSON.parse(data.join('\n'));
    } catch (_) {
      return;
    }
    onEvent({ id, type, data: parsed });
  };
  (async () => {
    while (!stopped) {
      ctrl = new AbortController();
      onState(last === null ? 'connecting' : 'reconnecting');
      try {
        const headers = { ...authHeaders(), Accept: 'text/event-stream' };
        if (last !== null) headers['Last-Event-ID'] = last;
        const resp = await fetch(`/v1/events${query}`, { headers, signal: ctrl.signal, cache: 'no-store' });
        if (resp.status === 401) {
          unauthorized(new ApiError(401, 'The event stream refused the credential'));
          onState('stopped');
          return;
        }
        if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
        if (last === null) last = resp.headers.get('Last-Event-ID');
        onState('live');
        delay = 500;
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let m;
          while ((m = /\r?\n\r?\n/.exec(buf))) {
            dispatch(buf.slice(0, m.index));
            buf = buf.slice(m.index + m[0].length);
          }
        }
      } catch (_) {
        // Dropped or refused: retry below.
      }
      if (stopped) break;
      onState('reconnecting');
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
    }
    onState('stopped');
  })();
  return {
    stop() {
      stopped = true;
      if (ctrl) ctrl.abort();
    },
  };
}

// Formatting shared by the pages.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** `DOE^JANE^^^` as `DOE, JANE`. */
export function personName(pn) {
  if (!pn) return '';
  const [family = '', given = '', middle = ''] = pn.split('=')[0].split('^');
  return [family, [given, middle].filter(Boolean).join(' ')].filter(Boolean).join(', ');
}

/** `YYYYMMDD` as `YYYY-MM-DD`. */
export function dicomDate(d) {
  return d && /^\d{8}$/.test(d) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}` : d || '';
}

export function time(value) {
  if (value === null || value === undefined || value === '') return '';
  const d = typeof value === 'number' ? new Date(value) : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return '';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

export function urgencyBadge(urgency) {
  if (!urgency) return el('span', { class: 'badge none', text: 'pending' });
  return el('span', { class: `badge urg-${urgency}`, text: urgency });
}

export function announce(text) {
  const a = document.getElementById('announce');
  if (!a) return;
  a.textContent = '';
  setTimeout(() => {
    a.textContent = text;
  }, 50);
}

export function errorBox(message) {
  return el('p', { class: 'error', role: 'alert', text: message });
}
