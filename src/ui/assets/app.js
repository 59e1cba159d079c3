// The pages' entry point: sign in when the tab holds no credential, then draw the page the
// path names. Every page is drawn into <main>; links are ordinary links (full page loads).

import { can, clearCredential, credential, me, onUnauthorized } from './api.js';
import { refusal, renderLogin } from './login.js';
import { renderWorklist } from './worklist.js';
import { renderStudy } from './study.js';
import { renderAudit, renderExports, renderHealth, renderModels } from './ops.js';

const main = document.getElementById('main');

function header(who) {
  const nav = document.getElementById('nav');
  for (const item of nav.querySelectorAll('[data-scope]')) {
    if (!can(who, item.dataset.scope)) item.remove();
  }
  for (const a of nav.querySelectorAll('a')) {
    const here = a.getAttribute('href') === location.pathname;
    if (here) a.setAttribute('aria-current', 'page');
  }
  nav.hidden = false;
  const whoEl = document.getElementById('who');
  whoEl.textContent = who.subject;
  whoEl.title = `Scopes: ${who.scopes.join(', ')}`;
  const logout = document.getElementById('logout');
  logout.hidden = false;
  logout.addEventListener('click', () => {
    clearCredential();
    location.assign('/ui/');
  });
}

function signedOut(message) {
  clearCredential();
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('who').textContent = '';
  document.getElementById('conn').textContent = '';
  renderLogin(main, message, () => location.reload());
}

async function start() {
  onUnauthorized((e) => signedOut(`Signed out: ${e.message}. Sign in again.`));
  if (!credential()) {
    signedOut(null);
    return;
  }
  let who;
  try {
    who = await me();
  } catch (e) {
    signedOut(refusal(e));
    return;
  }
  header(who);
  const path = location.pathname;
  let m;
  if (path === '/ui/' || path === '/ui') renderWorklist(main, who);
  else if ((m = /^\/ui\/studies\/([0-9.]+)$/.exec(path))) renderStudy(main, who, m[1]);
  else if (path === '/ui/exports') renderExports(main, who);
  else if (path === '/ui/models') renderModels(main, who);
  else if (path === '/ui/health') renderHealth(main, who);
  else if (path === '/ui/audit') renderAudit(main, who);
  else main.textContent = 'No such page.';
}

start();
