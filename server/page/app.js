// The designer's page: a client of the service's API (docs/api.md) and
// nothing more. Every rule (who may grant, what a valid component is) is the
// API's; the page shows its answers and hides what the signed-in role cannot
// do. Everything an action wrote (its manifest, logs, records) is put into
// the page as text, never as markup.

const TOKEN = "action-host-token";
const main = document.getElementById("main");

/// An element: `h("td", {class: "num"}, "3")`. Strings become text nodes;
/// `on*` properties become listeners; null and false children are skipped.
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "checked" || key === "value") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/// A failed API call: the service's code and message.
class Refused extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/// Sends a request with the signed-in token and gives back the response as
/// it came. `body` is JSON unless it is a file; `ifMatch` makes a change only
/// if no other came first.
async function send(method, path, body, ifMatch) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN) || ""}` };
  let payload;
  if (body instanceof Blob) {
    headers["Content-Type"] = "application/wasm";
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  if (ifMatch !== undefined) headers["If-Match"] = `"${ifMatch}"`;
  try {
    return await fetch(path, { method, headers, body: payload, cache: "no-store" });
  } catch (e) {
    throw new Refused(0, "unreachable", `the service cannot be reached: ${e.message}`);
  }
}

/// Calls the API: its JSON answer, or a [`Refused`] with the service's
/// message. A token the service does not know signs the page out.
async function api(method, path, body, ifMatch) {
  const response = await send(method, path, body, ifMatch);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error;
    const message = error ? error.message : `${response.status} ${response.statusText}`;
    if (response.status === 401) {
      signOut(`Not signed in: ${message}`);
    }
    throw new Refused(response.status, error ? error.code : "http", message);
  }
  return data;
}

// ---- sign in -------------------------------------------------------------

let role = null;

function signOut(reason) {
  sessionStorage.removeItem(TOKEN);
  role = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  showSignIn(reason);
}

function showSignIn(reason) {
  const token = h("input", {
    type: "password", id: "token", name: "token", autocomplete: "current-password",
    required: true, "aria-describedby": "token-hint",
  });
  const notice = h("div", { class: "notice error", role: "alert", id: "sign-in-error" }, reason || "");
  const form = h("form", { class: "signin", onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN, token.value.trim());
    try {
      await whoAmI();
      route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN);
      notice.textContent = e.status === 401 || e.status === 403
        ? `Not signed in: ${e.message}` : e.message;
    }
  } },
    h("h1", {}, "Sign in"),
    h("p", {}, "Sign in with the designer or operator token of this service."),
    h("div", { class: "grid" },
      h("label", { for: "token" }, "Token"), token,
      h("span", { class: "hint", id: "token-hint" },
        "Kept in this tab's session storage only; sent as a bearer header.")),
    h("div", { class: "actions-row" }, h("button", { type: "submit" }, "Sign in")),
    notice);
  show("Sign in", form);
  token.focus();
}

async function whoAmI() {
  const me = await api("GET", "/v1/me");
  role = me.role;
  document.getElementById("role").textContent = me.auth ? `Signed in as ${me.role}` : "Auth is off";
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
}

document.getElementById("sign-out").addEventListener("click", () => signOut(""));

// ---- routing ---------------------------------------------------------------

function show(title, ...content) {
  document.title = `${title} · action-host`;
  main.replaceChildren(...content);
}

async function route() {
  if (!sessionStorage.getItem(TOKEN)) return showSignIn("");
  if (!role) {
    try {
      await whoAmI();
    } catch (e) {
      return signOut(`Not signed in: ${e.message}`);
    }
  }
  const path = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  let match;
  try {
    if ((match = path.match(/^\/actions\/([^/]+)$/))) await actionPage(match[1]);
    else if ((match = path.match(/^\/invocations\/([^/]+)$/))) await recordPage(match[1]);
    else await listPage();
  } catch (e) {
    if (e.status === 401) return;
    show("Error", h("h1", {}, "Something went wrong"), h("div", { class: "notice error", role: "alert" }, e.message));
  }
  main.focus();
}

window.addEventListener("hashchange", route);

// ---- small pieces ----------------------------------------------------------

const when = (value) => (value === undefined || value === null ? "" : new Date(value).toLocaleString());
const json = (value) => JSON.stringify(value, null, 2);
/// Milliseconds as people read them: three figures, no binary noise.
const ms = (value) => (value >= 100 ? String(Math.round(value)) : String(Number(value.toPrecision(3))));
const link = (href, text) => h("a", { href }, text);
const notice = () => h("div", { class: "notice", role: "status", "aria-live": "polite" });

function tell(el, ok, text) {
  el.className = ok ? "notice ok" : "notice error";
  el.setAttribute("role", ok ? "status" : "alert");
  el.textContent = text;
}

/// Runs `work` with `button` disabled, telling `where` how it went.
async function busy(button, where, work, done) {
  button.disabled = true;
  try {
    const result = await work();
    if (done) tell(where, true, done(result));
    return result;
  } catch (e) {
    tell(where, false, e.message);
  } finally {
    button.disabled = false;
  }
}

function resultTag(result) {
  const kind = result === "success" || result === "failure" ? result : "error";
  return h("span", { class: `tag ${kind}` }, result);
}

function table(head, rows, caption) {
  return h("table", {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col", class: c.endsWith("#") ? "num" : null }, c.replace(/#$/, ""))))),
    h("tbody", {}, rows));
}

// ---- the list of actions ---------------------------------------------------

async function listPage() {
  const { actions } = await api("GET", "/v1/actions");
  const rows = actions.map((a) => {
    const counts = a.invocations || {};
    const calls = Object.values(counts).reduce((n, c) => n + c, 0);
    const errors = Object.entries(counts)
      .filter(([result]) => result !== "success" && result !== "failure")
      .reduce((n, [, c]) => n + c, 0);
    return h("tr", {},
      h("td", {}, link(`#/actions/${encodeURIComponent(a.name)}`, a.name)),
      h("td", { class: "num" }, a.version),
      h("td", { class: "num" }, calls),
      h("td", { class: "num" }, errors),
      h("td", { class: "num" }, a.p50_ms === undefined ? "" : `${a.p50_ms} ms`),
      h("td", {}, when(a.changed_at)));
  });
  show("Actions",
    h("h1", {}, "Actions"),
    actions.length
      ? table(["Action", "Version#", "Calls#", "Errors#", "Median#", "Changed"], rows)
      : h("p", { class: "muted" }, "No action is serving yet. Upload one below."),
    uploadPanel());
}

function uploadPanel() {
  const name = h("input", { type: "text", id: "upload-name", required: true, pattern: "[a-z0-9][a-z0-9_\\-]*", "aria-describedby": "upload-name-hint" });
  const file = h("input", { type: "file", id: "upload-file", accept: ".wasm,application/wasm" });
  const status = notice();
  const drop = h("div", { class: "drop", id: "drop" }, "Drop a component (.wasm) here, or choose one above.");
  let chosen = null;
  const choose = (f) => {
    chosen = f;
    if (!f) return;
    if (!name.value) name.value = f.name.replace(/\.wasm$/, "").toLowerCase().replace(/[^a-z0-9_-]+/g, "-");
    drop.textContent = `Chosen: ${f.name} (${f.size} bytes)`;
  };
  file.addEventListener("change", () => choose(file.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    choose(e.dataTransfer.files[0]);
  });
  const button = h("button", { type: "submit" }, "Upload");
  const form = h("form", { onsubmit: async (event) => {
    event.preventDefault();
    if (!chosen) return tell(status, false, "Choose a component file first.");
    const action = name.value.trim();
    const view = await busy(button, status, () => api("PUT", `/v1/actions/${encodeURIComponent(action)}`, chosen));
    if (view) location.hash = `#/actions/${encodeURIComponent(view.name)}`;
  } },
    h("h2", {}, "Upload an action"),
    h("div", { class: "grid" },
      h("label", { for: "upload-name" }, "Action name"), name,
      h("span", { class: "hint", id: "upload-name-hint" }, "Lower-case letters, digits, - and _. Uploading to a serving name adds a version."),
      h("label", { for: "upload-file" }, "Component"), file),
    drop,
    h("div", { class: "actions-row" }, button),
    status);
  return form;
}

// ---- one action ------------------------------------------------------------

async function actionPage(name) {
  const path = `/v1/actions/${encodeURIComponent(name)}`;
  const [action, versions] = await Promise.all([api("GET", path), api("GET", `${path}/versions`)]);
  const m = action.manifest;
  show(name,
    h("p", {}, link("#/", "← Actions")),
    h("h1", {}, name),
    h("p", { class: "muted" },
      `Version ${action.version} · ${m.name} ${m.version} · changed ${when(action.changed_at)} · `,
      h("span", { class: "mono", title: action.sha256 }, action.sha256.slice(0, 12))),
    m.description ? h("p", {}, m.description) : null,
    h("h2", {}, "Inputs and outputs"),
    h("div", { class: "cols" },
      attributes("Inputs", m.inputs, true),
      attributes("Outputs", m.outputs, false)),
    destinations(action),
    configPanel(action),
    recordingPanel(action),
    tryPanel(action),
    platformPanel(action),
    historyPanel(action),
    versionsPanel(action, versions.versions));
}

function attributes(title, specs, inputs) {
  return h("section", {},
    h("h3", {}, title),
    specs.length
      ? table(["Name", "Kind", inputs ? "Required" : null, "Description"].filter(Boolean),
        specs.map((s) => h("tr", {},
          h("td", { class: "mono" }, s.name), h("td", {}, s.kind),
          inputs ? h("td", {}, s.required ? "yes" : "no") : null,
          h("td", {}, s.description))))
      : h("p", { class: "muted" }, "None."));
}

function destinations(action) {
  const asked = action.hosts;
  const used = new Set(asked.flatMap((a) => a.granted_by));
  const unasked = action.settings.grants.filter((g) => !used.has(g));
  const operator = role === "operator";
  const editor = operator ? grantsEditor(action) : null;
  const rows = asked.map((a) => h("tr", {},
    h("td", { class: "mono" }, a.host),
    h("td", {}, a.granted_by.length
      ? a.granted_by.map((g) => h("div", { class: "mono" }, g))
      : [h("span", { class: "missing" }, "not granted: its requests will be denied"),
        operator ? [" ", h("button", { type: "button", class: "secondary", "aria-label": `Grant ${a.host}`, onclick: () => editor.add(a.host) }, "Grant")] : null])));
  for (const g of unasked) {
    rows.push(h("tr", {}, h("td", { class: "muted" }, "(not asked for)"), h("td", { class: "mono" }, g)));
  }
  return h("section", {},
    h("h2", {}, "Destinations"),
    rows.length
      ? table(["Asked for", "Granted by"], rows)
      : h("p", { class: "muted" }, "It asks for no destination and has no grant."),
    operator ? editor.form : h("p", { class: "muted" }, "Only the operator can grant a destination."));
}

/// The operator's grants, one per line. Secrets, limits and the rest are
/// sent back as they are; a secret without its value keeps the one it has.
function grantsEditor(action) {
  const text = h("textarea", { id: "grants", rows: 4, "aria-describedby": "grants-hint" });
  text.value = action.settings.grants.join("\n");
  const status = notice();
  const button = h("button", { type: "submit" }, "Save grants");
  const form = h("form", { onsubmit: async (event) => {
    event.preventDefault();
    const grants = text.value.split("\n").map((g) => g.trim()).filter(Boolean);
    const secrets = action.settings.secrets.map(({ value, ...kept }) => kept);
    const settings = { ...action.settings, grants, secrets };
    const view = await busy(button, status,
      () => api("PUT", `/v1/actions/${encodeURIComponent(action.name)}/grants`, settings, action.revision));
    if (view) {
      await actionPage(action.name);
      const after = document.getElementById("grants-status");
      if (after) tell(after, true, "Grants saved.");
    }
  } },
    h("div", { class: "grid" },
      h("label", { for: "grants" }, "Grants"), text,
      h("span", { class: "hint", id: "grants-hint" }, "One per line: [METHODS] scheme://host[:port][/path], for example GET https://api.shop.example/v1. Secrets: docs/host-config.md.")),
    h("div", { class: "actions-row" }, button),
    status);
  status.id = "grants-status";
  const add = (host) => {
    const origin = host.includes("://") ? host : `https://${host}`;
    text.value = [text.value.trim(), origin].filter(Boolean).join("\n");
    text.focus();
  };
  return { form, add };
}

function configPanel(action) {
  const keys = [...new Set([...action.manifest.config, ...Object.keys(action.settings.config)])];
  const status = notice();
  const fields = keys.map((key, i) => {
    // Own keys only: a key such as `constructor` is on every object.
    const value = Object.hasOwn(action.settings.config, key) ? action.settings.config[key] : "";
    const input = h("input", { type: "text", id: `config-${i}`, value });
    input.dataset.key = key;
    return input;
  });
  const button = h("button", { type: "submit" }, "Save config");
  return h("form", { onsubmit: async (event) => {
    event.preventDefault();
    // fromEntries makes each key its own, `__proto__` included.
    const config = Object.fromEntries(fields.filter((f) => f.value !== "").map((f) => [f.dataset.key, f.value]));
    const view = await busy(button, status,
      () => api("PUT", `/v1/actions/${encodeURIComponent(action.name)}/config`, config, action.revision),
      () => "Saved.");
    if (view) action.revision = view.revision;
  } },
    h("h2", {}, "Config"),
    keys.length
      ? [h("div", { class: "grid" }, keys.map((key, i) => [h("label", { for: `config-${i}`, class: "mono" }, key), fields[i]])),
        h("div", { class: "actions-row" }, button)]
      : h("p", { class: "muted" }, "It reads no config keys."),
    status);
}

function recordingPanel(action) {
  const current = action.settings.recording || { mode: "failures" };
  const mode = h("select", { id: "recording-mode" },
    [["off", "Off"], ["failures", "Failures only"], ["all", "Every call"]].map(([value, text]) =>
      h("option", { value, selected: current.mode === value }, text)));
  const sample = h("input", { type: "number", id: "recording-sample", min: 0, max: 1, step: "any", value: current.sample ?? "", "aria-describedby": "sample-hint" });
  const status = notice();
  const button = h("button", { type: "submit" }, "Save recording");
  return h("form", { onsubmit: async (event) => {
    event.preventDefault();
    const body = { mode: mode.value };
    if (sample.value !== "") body.sample = Number(sample.value);
    const view = await busy(button, status,
      () => api("PUT", `/v1/actions/${encodeURIComponent(action.name)}/recording`, body, action.revision),
      () => "Saved.");
    if (view) action.revision = view.revision;
  } },
    h("h2", {}, "Recording"),
    h("div", { class: "grid" },
      h("label", { for: "recording-mode" }, "Record"), mode,
      h("label", { for: "recording-sample" }, "Sample"), sample,
      h("span", { class: "hint", id: "sample-hint" }, "The share of calls considered, 0 to 1; empty for all.")),
    h("div", { class: "actions-row" }, button),
    status);
}

// ---- try it ----------------------------------------------------------------

/// The field for one input, by its kind, and how to read its value back.
function inputField(spec, id) {
  switch (spec.kind) {
    case "boolean": {
      const el = h("input", { type: "checkbox", id });
      return [el, () => el.checked];
    }
    case "integer":
    case "decimal": {
      const el = h("input", { type: "number", id, step: spec.kind === "integer" ? 1 : "any", required: spec.required });
      return [el, () => (el.value === "" ? undefined : Number(el.value))];
    }
    case "timestamp": {
      const el = h("input", { type: "datetime-local", id, step: 1, required: spec.required });
      return [el, () => (el.value === "" ? undefined : new Date(el.value).toISOString())];
    }
    case "json": {
      const el = h("textarea", { id, required: spec.required, placeholder: "{ }" });
      return [el, () => {
        if (el.value.trim() === "") return undefined;
        try {
          return JSON.parse(el.value);
        } catch (e) {
          throw new Error(`${spec.name} is not valid JSON: ${e.message}`);
        }
      }];
    }
    default: {
      const el = h("input", { type: "text", id, required: spec.required });
      return [el, () => (el.value === "" ? undefined : el.value)];
    }
  }
}

function timeZones() {
  const here = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const all = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const zones = [...new Set(["UTC", here, ...all])].sort();
  return h("select", { id: "try-timezone" }, zones.map((z) => h("option", { value: z, selected: z === here }, z)));
}

function tryPanel(action) {
  const inputs = action.manifest.inputs.map((spec, i) => {
    const id = `try-input-${i}`;
    const [el, read] = inputField(spec, id);
    return { spec, id, el, read };
  });
  const user = h("input", { type: "text", id: "try-user", value: "designer" });
  const zone = timeZones();
  const locale = h("input", { type: "text", id: "try-locale", value: navigator.language || "en" });
  const status = notice();
  const result = h("div", { id: "try-result", "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Run");
  return h("form", { id: "try-it", onsubmit: async (event) => {
    event.preventDefault();
    result.replaceChildren();
    let input;
    try {
      const entries = [];
      for (const field of inputs) {
        const value = field.read();
        if (value !== undefined) entries.push([field.spec.name, value]);
      }
      input = Object.fromEntries(entries);
    } catch (e) {
      return tell(status, false, e.message);
    }
    const context = { user_id: user.value || undefined, timezone: zone.value, locale: locale.value || undefined };
    const tried = await busy(button, status,
      () => api("POST", `/v1/actions/${encodeURIComponent(action.name)}/try`, { input, context }));
    if (tried) {
      status.className = "notice";
      status.textContent = "";
      const record = tried.record;
      result.replaceChildren(h("h3", {}, "Result"), recordBody(record),
        tried.recorded
          ? h("p", {}, link(`#/invocations/${encodeURIComponent(record.id)}`, "Open this call's record"))
          : h("p", { class: "muted" }, "Not kept: the recording settings keep no record of this call."));
    }
  } },
    h("h2", {}, "Try it"),
    h("div", { class: "grid" },
      inputs.map((f) => [
        h("label", { for: f.id }, f.spec.name, f.spec.required ? " *" : "", h("span", { class: "muted" }, ` (${f.spec.kind})`)),
        f.el,
        f.spec.description ? h("span", { class: "hint" }, f.spec.description) : null]),
      h("label", { for: "try-user" }, "User id"), user,
      h("label", { for: "try-timezone" }, "Time zone"), zone,
      h("label", { for: "try-locale" }, "Locale"), locale),
    h("div", { class: "actions-row" }, button),
    status,
    result);
}

/// Sends a request body copied from a platform's logs to the platform's
/// webhook, and shows what the platform would receive.
function platformPanel(action) {
  const name = encodeURIComponent(action.name);
  const platforms = {
    "dialogflow-cx": { label: "Dialogflow CX (WebhookRequest)", path: `/webhooks/dialogflow-cx/${name}` },
    rasa: { label: "Rasa (action server request; next_action picks the action)", path: "/webhooks/rasa" },
    opendialog: { label: "OpenDialog (webhook action request)", path: `/webhooks/opendialog/${name}` },
  };
  const platform = h("select", { id: "platform" },
    Object.entries(platforms).map(([value, p]) => h("option", { value }, p.label)));
  const request = h("textarea", { id: "platform-request", rows: 8, placeholder: "{ ... }" });
  const status = notice();
  const answer = h("div", { id: "platform-answer", "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Send");
  return h("form", { onsubmit: async (event) => {
    event.preventDefault();
    answer.replaceChildren();
    let body;
    try {
      body = JSON.parse(request.value);
    } catch (e) {
      return tell(status, false, `The request is not valid JSON: ${e.message}`);
    }
    button.disabled = true;
    try {
      // The platform's answer is shown whatever its status: it is what the
      // platform would receive.
      const response = await send("POST", platforms[platform.value].path, body);
      const text = await response.text();
      let shown = text;
      try {
        shown = json(JSON.parse(text));
      } catch {
        // Shown as it came.
      }
      status.className = "notice";
      status.textContent = "";
      answer.replaceChildren(
        h("h3", {}, `What ${platform.value} would receive: ${response.status} ${response.statusText}`),
        h("pre", {}, shown));
    } catch (e) {
      tell(status, false, e.message);
    } finally {
      button.disabled = false;
    }
  } },
    h("h2", {}, "Try a platform's request"),
    h("p", { class: "muted" }, "Paste a request body copied from the platform's logs; it goes to the platform's webhook here, as the platform would send it."),
    h("div", { class: "grid" },
      h("label", { for: "platform" }, "Platform"), platform,
      h("label", { for: "platform-request" }, "Request body"), request),
    h("div", { class: "actions-row" }, button),
    status,
    answer);
}

// ---- a record ---------------------------------------------------------------

function body(recorded) {
  if (!recorded || recorded.bytes === 0) return h("span", { class: "muted" }, "(empty)");
  const text = recorded.text !== undefined ? recorded.text : `base64: ${recorded.base64}`;
  return [h("pre", {}, text), recorded.truncated ? h("p", { class: "muted" }, `cut: ${recorded.bytes} bytes in all`) : null];
}

function headers(list) {
  return list.length ? h("pre", {}, list.map(([k, v]) => `${k}: ${v}`).join("\n")) : h("span", { class: "muted" }, "(none)");
}

/// What a call did: its result, attributes, messages, logs and every
/// outbound exchange. Shared by try-it and a record's page.
function recordBody(record) {
  const outcome = record.outcome;
  const summary = h("p", {}, resultTag(record.result), " ",
    record.error ? h("span", { class: "missing" }, record.error.message) : null,
    h("span", { class: "muted" }, ` · ${ms(record.duration_ms)} ms · memory peak ${Math.ceil(record.memory_peak_bytes / 1024)} KiB`));
  const parts = [summary];
  if (outcome) {
    const attrs = Object.entries(outcome.attributes);
    parts.push(h("h3", {}, "Attributes"), attrs.length
      ? table(["Name", "Value"], attrs.map(([k, v]) => h("tr", {}, h("td", { class: "mono" }, k), h("td", { class: "mono" }, JSON.stringify(v)))))
      : h("p", { class: "muted" }, "None."));
    parts.push(h("h3", {}, "Messages"), outcome.messages.length
      ? h("ul", { class: "messages" }, outcome.messages.map((msg) => h("li", {}, msg)))
      : h("p", { class: "muted" }, "None."));
  }
  parts.push(h("h3", {}, "Logs"), record.logs.length
    ? table(["Level", "From", "Message"], record.logs.map((l) => h("tr", {}, h("td", {}, l.level), h("td", {}, l.source), h("td", {}, l.message))))
    : h("p", { class: "muted" }, "None."));
  parts.push(h("h3", {}, "Outbound calls"), record.exchanges.length
    ? table(["Request", "Answer", "ms#"], record.exchanges.map((x) => h("tr", {},
      h("td", {}, h("details", {},
        h("summary", { class: "mono" }, `${x.method} ${x.url}`),
        h("h4", {}, "Request headers"), headers(x.request_headers),
        h("h4", {}, "Request body"), body(x.request_body),
        x.outcome.type === "response" ? [h("h4", {}, "Response headers"), headers(x.outcome.headers), h("h4", {}, "Response body"), body(x.outcome.body)] : null)),
      h("td", {}, x.outcome.type === "response"
        ? String(x.outcome.status)
        : h("span", { class: "missing" }, `${x.outcome.kind}${x.outcome.message ? `: ${x.outcome.message}` : ""}`)),
      h("td", { class: "num" }, ms(x.duration_ms)))))
    : h("p", { class: "muted" }, "None."));
  return h("div", { class: "record" }, parts);
}

function historyPanel(action) {
  const filter = h("select", { id: "history-result" },
    [["", "Every result"], ["success", "Success"], ["failure", "Failure"], ["error", "Error"], ["not-success", "Not success"]]
      .map(([value, text]) => h("option", { value }, text)));
  const rows = h("tbody", {});
  const status = notice();
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Older calls");
  let next = null;
  const load = async (reset) => {
    if (reset) { rows.replaceChildren(); next = null; }
    const query = new URLSearchParams({ limit: "20" });
    if (filter.value) query.set("result", filter.value);
    if (next) query.set("after", next);
    const page = await busy(more, status,
      () => api("GET", `/v1/actions/${encodeURIComponent(action.name)}/invocations?${query}`));
    if (!page) return;
    next = page.next || null;
    more.hidden = !next;
    for (const r of page.invocations) {
      rows.append(h("tr", {},
        h("td", {}, link(`#/invocations/${encodeURIComponent(r.id)}`, when(r.at_ms))),
        h("td", {}, resultTag(r.result), r.error ? h("div", { class: "muted" }, r.error) : null),
        h("td", { class: "num" }, r.version),
        h("td", {}, r.source),
        h("td", { class: "num" }, ms(r.duration_ms)),
        h("td", { class: "num" }, r.exchanges)));
    }
    if (!rows.children.length) {
      rows.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No recorded calls.")));
    }
  };
  filter.addEventListener("change", () => load(true));
  more.addEventListener("click", () => load(false));
  load(true);
  return h("section", {},
    h("h2", {}, "Recorded calls"),
    h("div", { class: "grid" }, h("label", { for: "history-result" }, "Show"), filter),
    h("table", { id: "history" },
      h("thead", {}, h("tr", {}, ["When", "Result", "Version", "From", "ms", "Outbound"].map((c) => h("th", { scope: "col" }, c)))),
      rows),
    more,
    status);
}

function versionsPanel(action, versions) {
  const status = notice();
  const rows = versions.map((v) => {
    const button = v.serving ? null : h("button", { type: "button", class: "secondary", "aria-label": `Roll back to version ${v.version}` }, "Roll back");
    if (button) {
      button.addEventListener("click", async () => {
        const view = await busy(button, status,
          () => api("POST", `/v1/actions/${encodeURIComponent(action.name)}/rollback`, { version: v.version }, action.revision));
        if (view) {
          await actionPage(action.name);
          const after = document.getElementById("versions-status");
          if (after) tell(after, true, `Version ${v.version} is serving.`);
        }
      });
    }
    return h("tr", {},
      h("td", { class: "num" }, v.version),
      h("td", {}, when(v.uploaded_at)),
      h("td", {}, v.uploaded_by),
      h("td", {}, v.manifest_version),
      h("td", { class: "mono", title: v.sha256 }, v.sha256.slice(0, 12)),
      h("td", {}, v.serving ? h("span", { class: "tag serving" }, "serving") : button));
  });
  status.id = "versions-status";
  return h("section", {},
    h("h2", {}, "Versions"),
    table(["Version#", "Uploaded", "By", "Manifest version", "SHA-256", ""], rows),
    h("p", { class: "muted" }, "A rollback serves the version with the settings serving now."),
    status);
}

async function recordPage(id) {
  const record = await api("GET", `/v1/invocations/${encodeURIComponent(id)}`);
  let versions = [];
  try {
    versions = (await api("GET", `/v1/actions/${encodeURIComponent(record.action)}/versions`)).versions;
  } catch {
    // The action may be deleted since: its records stay until they expire.
  }
  const against = h("select", { id: "replay-version" },
    h("option", { value: "" }, "the version serving now"),
    versions.filter((v) => !v.serving).map((v) => h("option", { value: v.version }, `version ${v.version} (${v.manifest_version})`)));
  const status = notice();
  const outcome = h("div", { id: "replay-result", "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Replay");
  show(`Call ${id}`,
    h("p", {}, link(`#/actions/${encodeURIComponent(record.action)}`, `← ${record.action}`)),
    h("h1", {}, "Recorded call"),
    h("p", { class: "muted" }, `${when(record.at_ms)} · version ${record.version} · from ${record.source} · `, h("span", { class: "mono" }, record.id)),
    h("div", { class: "cols" },
      h("section", {}, h("h3", {}, "Context"), h("pre", {}, json(record.context))),
      h("section", {}, h("h3", {}, "Input"), h("pre", {}, json(record.input)))),
    recordBody(record),
    h("form", { onsubmit: async (event) => {
      event.preventDefault();
      outcome.replaceChildren();
      const body = against.value ? { version: Number(against.value) } : undefined;
      const replay = await busy(button, status, () => api("POST", `/v1/invocations/${encodeURIComponent(id)}/replay`, body));
      if (replay) outcome.replaceChildren(replayBody(replay));
    } },
      h("h2", {}, "Replay"),
      h("p", {}, "Runs the call again with the same context, input and clock; its outbound requests are answered from this record."),
      h("div", { class: "grid" }, h("label", { for: "replay-version" }, "Against"), against),
      h("div", { class: "actions-row" }, button),
      status,
      outcome));
}

function replayBody(replay) {
  const same = replay.differences.length === 0;
  return h("section", {},
    h("div", { class: same ? "notice ok" : "notice error", role: "status" },
      same ? "The replay did what the record did." : `${replay.differences.length} difference(s) from the record.`),
    same ? null : table(["Field", "Recorded", "Replayed"], replay.differences.map((d) => h("tr", { class: "differs" },
      h("td", { class: "mono" }, d.field),
      h("td", {}, h("pre", {}, json(d.recorded))),
      h("td", {}, h("pre", {}, json(d.replayed)))))),
    h("h3", {}, `Replayed on version ${replay.replayed.version}`),
    recordBody(replay.replayed));
}

route();
