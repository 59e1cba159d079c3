// A small live line chart in SVG (no library): the last N samples of one series.

const SVG = 'http://www.w3.org/2000/svg';

function node(tag, attrs) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  return n;
}

/** A chart in `figure`; `push(value)` adds a sample and redraws. */
export function sparkline(figure, { label, unit = '', max = 60 }) {
  const width = 300;
  const height = 70;
  const svg = node('svg', { viewBox: `0 0 ${width} ${height}`, class: 'spark', role: 'img', 'aria-label': label });
  const line = node('polyline', { class: 'spark-line', points: '' });
  const area = node('polygon', { class: 'spark-area', points: '' });
  svg.append(area, line);
  const value = document.createElement('span');
  value.className = 'spark-value';
  const caption = document.createElement('figcaption');
  caption.append(`${label} `, value);
  figure.append(svg, caption);
  const samples = [];
  return {
    push(v) {
      samples.push(v);
      if (samples.length > max) samples.shift();
      const top = Math.max(1e-9, ...samples.filter((x) => Number.isFinite(x)));
      const step = width / Math.max(1, max - 1);
      const pts = samples.map((s, i) => {
        const x = (i + (max - samples.length)) * step;
        const y = height - 4 - (Number.isFinite(s) ? s / top : 0) * (height - 8);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
      line.setAttribute('points', pts.join(' '));
      if (pts.length) {
        const first = pts[0].split(',')[0];
        const last = pts[pts.length - 1].split(',')[0];
        area.setAttribute('points', `${first},${height} ${pts.join(' ')} ${last},${height}`);
      }
      value.textContent = Number.isFinite(v) ? `${Number(v.toFixed(2))}${unit}` : '—';
      svg.setAttribute('aria-label', `${label}: ${value.textContent}`);
    },
  };
}

/** Prometheus text: the sum of every sample of `name` whose labels contain `match`. */
export function metric(text, name, match = '') {
  let total = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    if (!(line.startsWith(`${name} `) || line.startsWith(`${name}{`))) continue;
    if (match && !line.includes(match)) continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) total = (total ?? 0) + v;
  }
  return total;
}
