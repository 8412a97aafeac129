// The REST API, one function per call. Errors become ApiError with the server's message.

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

async function call(method, url, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, "cannot reach the picscope server: is it still running?", "offline");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    let detail = data && data.detail ? data.detail : `${response.status} ${response.statusText}`;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    throw new ApiError(response.status, String(detail), data && data.code);
  }
  return data;
}

export const api = {
  status: () => call("GET", "/api/status"),
  search: (request) => call("POST", "/api/search", request),
  similar: ({ id, upload, k, offset }) => {
    const params = new URLSearchParams({ k: String(k), offset: String(offset || 0) });
    if (id !== undefined && id !== null) params.set("id", String(id));
    if (upload) params.set("upload", upload);
    return call("GET", `/api/similar?${params}`);
  },
  info: (id) => call("GET", `/api/images/${encodeURIComponent(id)}/info`),
  upload: (file) => {
    const form = new FormData();
    form.append("file", file);
    return call("POST", "/api/uploads", form);
  },
  createSession: (body) => call("POST", "/api/sessions", body),
  mark: (sid, ids, relevant, round) => call("POST", `/api/sessions/${sid}/marks`, { ids, relevant, round }),
  undo: (sid) => call("POST", `/api/sessions/${sid}/undo`),
  next: (sid, round) => call("POST", `/api/sessions/${sid}/next`, { round }),
  back: (sid, round) => call("POST", `/api/sessions/${sid}/back`, { round }),
};
