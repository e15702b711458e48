// Sign-in page.

import { ApiError, post, setCsrf } from '../api';
import { h } from '../ui';

/** Render the sign-in form; `done` runs after a successful sign-in. */
export function loginPage(root: HTMLElement, done: () => Promise<void>, expired: boolean): void {
  const username = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const message = h('p.form-error', { role: 'alert' });
  const button = h('button.primary', { type: 'submit', id: 'sign-in' }, 'Sign in');
  const form = h('form.card', {
    onsubmit: async (e: Event) => {
      e.preventDefault();
      button.disabled = true;
      message.textContent = '';
      try {
        const session = await post<{ csrf_token: string }>('/auth/login', {
          username: username.value.trim(), password: password.value,
        });
        setCsrf(session.csrf_token);
        await done();
      } catch (err) {
        message.textContent = err instanceof ApiError
          ? (err.status === 401 ? 'Wrong user name or password.' : err.plain)
          : String(err);
        button.disabled = false;
        password.select();
      }
    },
  },
  h('h1', null, 'Truthset'),
  h('p.muted', null, 'Auditable ground truth for medical AI'),
  expired ? h('p.notice.error', null, 'Your session has expired. Sign in again — unsaved drawings are kept on this computer.') : null,
  h('label', null, 'User name', username),
  h('label', null, 'Password', password),
  message,
  button);
  root.append(form);
  username.focus();
}
