// The broker's HTTP API as the signed-in agent (`Authorization: Bearer`):
// JSON in and out, and a refusal as an ApiError carrying the broker's
// `{code, message}` and the HTTP status, so a page can show the message
// next to what caused it.

/** A refused or failed call: `status` (0 when the broker was not reached), `code`, `message`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls `method path` with `body` (sent as JSON when given). Resolves with
 * the answer's JSON, or null for an empty answer (204); rejects with an
 * ApiError.
 */
export async function callApi(token, method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, 'unavailable', 'The broker could not be reached. Try again.');
  }
  const text = await r.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!r.ok) {
    throw new ApiError(r.status, json?.code || 'error', json?.message || `The broker answered ${r.status}.`);
  }
  return json;
}
