// The login form: an API key or a token, checked against /v1/me before it is kept (for this
// tab only, in sessionStorage).

import { ApiError, el, getData, setCredential } from './api.js';

/** Why a typed credential was not accepted, in words. */
export function refusal(e) {
  if (!(e instanceof ApiError)) return `Sign-in failed: ${e.message}`;
  if (e.status === 401) {
    return `The node refused this key or token (${e.message}). Check that it was pasted in full and has not been revoked or expired.`;
  }
  if (e.status === 403) {
    return `This credential is valid but lacks the results:read scope the pages need (${e.message}).`;
  }
  if (e.status === 429) return 'Too many attempts: wait a minute and try again.';
  return `Sign-in failed: ${e.message}`;
}

export function renderLogin(main, message, onSignedIn) {
  document.title = 'Sign in · radstream';
  const error = el('p', { id: 'login-error', class: 'error', role: 'alert' });
  if (message) error.textContent = message;
  const input = el('input', {
    id: 'api_key',
    name: 'api_key',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    'aria-describedby': 'login-help login-error',
  });
  const button = el('button', { type: 'submit', class: 'primary', text: 'Sign in' });
  const form = el(
    'form',
    { id: 'login-form', class: 'stack', novalidate: true },
    el('label', { for: 'api_key', text: 'API key or token' }),
    input,
    error,
    button,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) {
      error.textContent = 'Paste an API key (rsk_…) or a token first.';
      input.focus();
      return;
    }
    button.disabled = true;
    error.textContent = '';
    try {
      const who = await getData('/v1/me', { with: value });
      setCredential(value, who);
      onSignedIn();
    } catch (e) {
      error.textContent = refusal(e);
      input.setAttribute('aria-invalid', 'true');
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(
    el(
      'section',
      { class: 'card login', 'aria-labelledby': 'login-title' },
      el('h1', { id: 'login-title', text: 'Sign in to radstream' }),
      el(
        'p',
        { id: 'login-help', class: 'muted' },
        'Paste an API key (',
        el('code', { text: 'radstream keys create' }),
        ') or a JWT (',
        el('code', { text: 'radstream token issue' }),
        '). It is kept in this browser tab only and sent in a header with each request, never in a URL.',
      ),
      form,
    ),
  );
  input.focus();
}
