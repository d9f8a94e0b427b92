// OpenRegistry web app: one ES module, no framework, no build step. Screens are routed by the
// URL's hash (#/, #/r/<repo>, #/r/<repo>@<digest>, #/tokens, #/passkeys, #/orgs, #/o/<org>).
//
// It talks only to this registry: the account API (/api/…) with the session cookie and the
// session's CSRF secret, and the registry API (/v2/…) with bearer tokens that /token mints from
// the same cookie. Every piece of text is set with textContent (never innerHTML).

const main = document.getElementById("main");
let me = { user: null, passkeys: false, signup: false };
let authOn = true;

// ---------- DOM helpers ----------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const show = (...nodes) => { main.replaceChildren(...nodes.flat(4).filter((n) => n !== null && n !== undefined && n !== "")); main.focus({ preventScroll: true }); };
function toast(text, bad = false) {
  const box = h("div", { class: bad ? "bad" : "" }, text);
  document.getElementById("toast").append(box);
  setTimeout(() => box.remove(), 5000);
}
const fail = (e) => toast(e.message || String(e), true);
const when = (ms) => (ms ? new Date(Number(ms)).toLocaleString() : "—");
function size(n) {
  if (n === undefined || n === null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}
const short = (digest) => (digest || "").replace(/^(sha256:|sha512:)/, "$1").slice(0, 19);
const table = (heads, rows, empty = "Nothing here yet.") =>
  rows.length
    ? h("table", {}, h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows))
    : h("p", { class: "muted" }, empty);
function field(label, input) {
  const id = "f" + Math.random().toString(36).slice(2);
  input.id = id;
  return h("div", {}, h("label", { for: id }, label), input);
}
function copyButton(text) {
  return h("button", { type: "button", onclick: async () => {
    try { await navigator.clipboard.writeText(text); toast("Copied"); } catch { toast("Select and copy the text", true); }
  } }, "Copy");
}

// ---------- the account API ----------
async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (me.csrf) headers["x-openregistry-csrf"] = me.csrf;
  const r = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = {};
  try { json = text ? JSON.parse(text) : {}; } catch { /* not JSON */ }
  if (!r.ok) {
    const e = new Error(json.error?.message || json.errors?.[0]?.message || `${r.status} ${r.statusText}`);
    e.status = r.status;
    throw e;
  }
  return json;
}

// ---------- the registry API, with tokens from /token ----------
const tokens = new Map();
function challenge(header) {
  const out = {};
  if (!header || !/^bearer /i.test(header)) return null;
  for (const m of header.slice(7).matchAll(/(\w+)="([^"]*)"/g)) out[m[1]] = m[2];
  return out;
}
// The scope a registry path needs to be read: signed in, the token is asked for up front (the
// catalog answers an anonymous caller too, with only what is public).
function scopeOf(path) {
  const p = path.split("?")[0];
  if (p === "/v2/_catalog") return "registry:catalog:*";
  const m = p.match(/^\/v2\/(.+)\/(tags|manifests|blobs|referrers)\//) || p.match(/^\/api\/repositories\/(.+)\/tags$/);
  return m ? `repository:${m[1]}:pull` : null;
}
async function bearerFor(scope, service) {
  const cached = tokens.get(scope);
  if (cached && cached.until > Date.now()) return cached.token;
  const q = new URLSearchParams();
  if (service) q.set("service", service);
  q.set("scope", scope);
  const t = await fetch(`/token?${q}`, { credentials: "same-origin" });
  if (!t.ok) return null;
  const body = await t.json();
  const token = body.token || body.access_token;
  tokens.set(scope, { token, until: Date.now() + ((body.expires_in || 60) - 10) * 1000 });
  return token;
}
async function reg(path, { method = "GET", accept } = {}) {
  const headers = {};
  if (accept) headers.accept = accept;
  const scope = scopeOf(path);
  if (me.user && scope) {
    const token = await bearerFor(scope, me.service);
    if (token) headers.authorization = `Bearer ${token}`;
  }
  let r = await fetch(path, { method, headers, credentials: "same-origin" });
  const c = r.status === 401 && !headers.authorization && challenge(r.headers.get("www-authenticate"));
  if (c && c.scope) {
    const token = await bearerFor(c.scope, c.service);
    if (token) {
      headers.authorization = `Bearer ${token}`;
      r = await fetch(path, { method, headers, credentials: "same-origin" });
    }
  }
  return r;
}
async function regJson(path, opts) {
  const r = await reg(path, opts);
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try { const j = await r.json(); message = j.errors?.[0]?.message || j.errors?.[0]?.code || message; } catch { /* empty */ }
    const e = new Error(message);
    e.status = r.status;
    throw e;
  }
  return { json: await r.json(), response: r };
}
const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");
const repoPath = (name) => name.split("/").map(encodeURIComponent).join("/");

// ---------- passkeys: WebAuthn JSON <-> browser types ----------
function b64d(text) {
  const s = text.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(s + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(bin, (ch) => ch.charCodeAt(0)).buffer;
}
function b64e(buffer) {
  let bin = "";
  for (const b of new Uint8Array(buffer)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function creationOptions(pk) {
  return { ...pk, challenge: b64d(pk.challenge), user: { ...pk.user, id: b64d(pk.user.id) },
    excludeCredentials: (pk.excludeCredentials || []).map((c) => ({ ...c, id: b64d(c.id) })) };
}
function requestOptions(pk) {
  return { ...pk, challenge: b64d(pk.challenge),
    allowCredentials: (pk.allowCredentials || []).map((c) => ({ ...c, id: b64d(c.id) })) };
}
function attestationJson(cred) {
  return { id: cred.id, rawId: b64e(cred.rawId), type: cred.type,
    response: { attestationObject: b64e(cred.response.attestationObject),
      clientDataJSON: b64e(cred.response.clientDataJSON) },
    extensions: cred.getClientExtensionResults() };
}
function assertionJson(cred) {
  const r = cred.response;
  return { id: cred.id, rawId: b64e(cred.rawId), type: cred.type,
    response: { authenticatorData: b64e(r.authenticatorData), clientDataJSON: b64e(r.clientDataJSON),
      signature: b64e(r.signature), userHandle: r.userHandle ? b64e(r.userHandle) : null },
    extensions: cred.getClientExtensionResults() };
}
async function register(startPath, finishPath, body, name) {
  const { ceremony, options } = await api("POST", startPath, body);
  const cred = await navigator.credentials.create({ publicKey: creationOptions(options.publicKey) });
  return api("POST", finishPath, { ceremony, credential: attestationJson(cred), name });
}
async function signIn(user) {
  const { ceremony, options } = await api("POST", "/api/session/start", { user });
  const cred = await navigator.credentials.get({ publicKey: requestOptions(options.publicKey) });
  return api("POST", "/api/session/finish", { ceremony, credential: assertionJson(cred) });
}

// ---------- screens ----------
function signInScreen() {
  const user = h("input", { name: "user", autocomplete: "username webauthn", required: true,
    pattern: "[a-z0-9]+(-[a-z0-9]+)*", maxlength: "39" });
  const message = h("p", { class: "error", role: "alert" });
  const act = (fn) => async (ev) => {
    ev.preventDefault();
    message.textContent = "";
    if (!user.reportValidity()) return;
    try {
      await fn(user.value.trim());
      me = await api("GET", "/api/session");
      if (location.hash.startsWith("#/signin")) location.hash = "#/"; else await route();
    }
    catch (e) { message.textContent = e.name === "NotAllowedError" ? "The passkey prompt was dismissed." : e.message; }
  };
  const up = (name) => register("/api/session/signup/start", "/api/session/signup/finish", { user: name }, "first passkey");
  show(h("section", { class: "panel signin" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "With a passkey: your device's screen lock, Touch ID, Windows Hello or a security key. No password."),
    h("form", { onsubmit: act(signIn) },
      field("User name", user),
      h("div", { class: "row" },
        h("button", { class: "primary", type: "submit", id: "sign-in" }, "Sign in with a passkey"),
        me.signup ? h("button", { type: "button", id: "sign-up", onclick: act(up) }, "Create an account") : null)),
    message,
    h("p", { class: "muted" }, h("a", { href: "#/" }, "Browse public repositories"))));
}

async function repositoriesScreen(query) {
  const last = query.get("last");
  const filter = h("input", { type: "search", placeholder: "Filter repositories", "aria-label": "Filter repositories",
    value: query.get("q") || "" });
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  show(h("h1", {}, "Repositories"), h("div", { class: "row" }, filter), body);
  let list = [], next = null;
  try {
    const { json, response } = await regJson(`/v2/_catalog?n=100${last ? `&last=${encodeURIComponent(last)}` : ""}`);
    list = json.repositories || [];
    const link = response.headers.get("link");
    const m = link && link.match(/last=([^&>]+)/);
    next = m ? decodeURIComponent(m[1]) : null;
  } catch (e) {
    body.replaceChildren(h("p", { class: "error" }, e.status === 401 ? "Sign in to see repositories." : e.message));
    return;
  }
  const render = () => {
    const words = filter.value.trim().toLowerCase();
    const rows = list.filter((n) => n.includes(words)).map((n) =>
      h("tr", {}, h("td", {}, h("a", { href: `#/r/${n}` }, n))));
    body.replaceChildren(table(["Name"], rows, words ? "No repository matches." : "No repositories yet: push one."),
      h("div", { class: "row" },
        last ? h("a", { class: "button", href: "#/" }, "First page") : null,
        next ? h("a", { class: "button", href: `#/?last=${encodeURIComponent(next)}` }, "Next page") : null));
  };
  filter.addEventListener("input", render);
  render();
}

async function manifestSummary(name, tag) {
  const { json, response } = await regJson(`/v2/${repoPath(name)}/manifests/${encodeURIComponent(tag)}`, { accept: MANIFEST_TYPES });
  const digest = response.headers.get("docker-content-digest");
  const isIndex = Array.isArray(json.manifests);
  const total = isIndex ? null : (json.config?.size || 0) + (json.layers || []).reduce((a, l) => a + (l.size || 0), 0);
  return { digest, isIndex, total, count: isIndex ? json.manifests.length : (json.layers || []).length, created: json.annotations?.["org.opencontainers.image.created"] };
}

async function repositoryScreen(name) {
  const host = location.host;
  const tagsBox = h("div", {}, h("p", { class: "muted" }, "Loading tags…"));
  const visBox = h("div", { class: "row" });
  show(h("p", {}, h("a", { href: "#/" }, "Repositories"), " / "), h("h1", {}, name), visBox, h("h2", {}, "Tags"), tagsBox);
  if (authOn && me.user) {
    api("GET", `/api/repositories/${repoPath(name)}/visibility`).then(({ visibility }) => {
      const other = visibility === "public" ? "private" : "public";
      visBox.replaceChildren(
        h("span", { class: `badge ${visibility}`, id: "visibility" }, visibility),
        h("button", { type: "button", id: "toggle-visibility", onclick: async () => {
          try { await api("PUT", `/api/repositories/${repoPath(name)}/visibility`, { visibility: other }); toast(`${name} is ${other} now`); route(); }
          catch (e) { fail(e); }
        } }, `Make ${other}`));
    }, () => {});
  }
  const page = async (last) => {
    let tags;
    try { tags = (await regJson(`/api/repositories/${repoPath(name)}/tags?n=50${last ? `&last=${encodeURIComponent(last)}` : ""}`)).json.tags; }
    catch (e) { tagsBox.replaceChildren(h("p", { class: "error" }, e.message)); return; }
    const rows = tags.map((tag) => {
      const sizeCell = h("td", {}, "…");
      manifestSummary(name, tag.digest).then((s) => sizeCell.replaceChildren(
        s.isIndex ? `index · ${s.count} platforms` : `${size(s.total)} · ${s.count} layers`), () => sizeCell.replaceChildren("—"));
      const pull = `docker pull ${host}/${name}:${tag.name}`;
      return h("tr", {}, h("td", {}, h("code", {}, tag.name)),
        h("td", {}, h("a", { href: `#/r/${name}@${tag.digest}`, class: "mono" }, short(tag.digest))),
        sizeCell, h("td", {}, when(tag.pushed_at_ms)),
        h("td", {}, h("div", { class: "pull" }, h("code", {}, pull), copyButton(pull))));
    });
    tagsBox.replaceChildren(table(["Tag", "Digest", "Size", "Pushed", "Pull"], rows, "No tags."),
      tags.length === 50 ? h("div", { class: "row" }, h("button", { type: "button", onclick: () => page(tags[49].name) }, "Next tags")) : "");
  };
  await page("");
}

function annotationsList(annotations) {
  const entries = Object.entries(annotations || {});
  return entries.length ? h("dl", {}, entries.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])) : h("p", { class: "muted" }, "None.");
}

async function manifestScreen(name, digest) {
  show(h("p", {}, h("a", { href: "#/" }, "Repositories"), " / ", h("a", { href: `#/r/${name}` }, name), " /"),
    h("h1", {}, `${name}@${short(digest)}`), h("p", { class: "muted" }, "Loading…"));
  let json, bytes;
  try {
    const r = await reg(`/v2/${repoPath(name)}/manifests/${digest}`, { accept: MANIFEST_TYPES });
    if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
    bytes = Number(r.headers.get("content-length")) || null;
    json = await r.json();
  } catch (e) { show(h("p", { class: "error" }, e.message)); return; }
  const parts = [
    h("p", {}, h("a", { href: "#/" }, "Repositories"), " / ", h("a", { href: `#/r/${name}` }, name), " /"),
    h("h1", {}, `${name}@${short(digest)}`),
    h("section", { class: "panel" }, h("dl", {},
      h("dt", {}, "Digest"), h("dd", {}, h("code", {}, digest)),
      h("dt", {}, "Media type"), h("dd", {}, json.mediaType || "—"),
      json.artifactType ? [h("dt", {}, "Artifact type"), h("dd", {}, json.artifactType)] : null,
      h("dt", {}, "Manifest size"), h("dd", {}, size(bytes)),
      json.subject ? [h("dt", {}, "Subject"), h("dd", {}, h("a", { href: `#/r/${name}@${json.subject.digest}` }, json.subject.digest))] : null,
      h("dt", {}, "Pull"), h("dd", {}, h("div", { class: "pull" }, h("code", {}, `docker pull ${location.host}/${name}@${digest}`), copyButton(`docker pull ${location.host}/${name}@${digest}`))))),
  ];
  if (Array.isArray(json.manifests)) {
    parts.push(h("h2", {}, "Platforms"), table(["Platform", "Digest", "Size", "Media type"],
      json.manifests.map((m) => h("tr", {},
        h("td", {}, m.platform ? [m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join("/") : "—"),
        h("td", {}, h("a", { class: "mono", href: `#/r/${name}@${m.digest}` }, short(m.digest))),
        h("td", {}, size(m.size)), h("td", {}, m.mediaType)))));
  } else {
    const config = json.config;
    const configBox = h("div", {});
    if (config) {
      parts.push(h("h2", {}, "Config"), h("section", { class: "panel" }, h("dl", {},
        h("dt", {}, "Digest"), h("dd", {}, h("code", {}, config.digest)),
        h("dt", {}, "Media type"), h("dd", {}, config.mediaType), h("dt", {}, "Size"), h("dd", {}, size(config.size))), configBox));
      if (/image\.config|container\.image/.test(config.mediaType || "") && config.size < 1 << 20) {
        regJson(`/v2/${repoPath(name)}/blobs/${config.digest}`).then(({ json: c }) => {
          configBox.replaceChildren(h("dl", {},
            h("dt", {}, "Platform"), h("dd", {}, [c.os, c.architecture, c.variant].filter(Boolean).join("/") || "—"),
            h("dt", {}, "Created"), h("dd", {}, c.created || "—"),
            c.config?.Entrypoint ? [h("dt", {}, "Entrypoint"), h("dd", {}, h("code", {}, c.config.Entrypoint.join(" ")))] : null,
            c.config?.Cmd ? [h("dt", {}, "Command"), h("dd", {}, h("code", {}, c.config.Cmd.join(" ")))] : null));
        }, () => {});
      }
    }
    parts.push(h("h2", {}, "Layers"), table(["#", "Digest", "Size", "Media type"],
      (json.layers || []).map((l, i) => h("tr", {}, h("td", {}, i + 1),
        h("td", {}, h("code", {}, short(l.digest))), h("td", {}, size(l.size)),
        h("td", {}, l.mediaType, /encrypted/.test(l.mediaType) ? [" ", h("span", { class: "badge warn" }, "encrypted")] : null)))));
  }
  parts.push(h("h2", {}, "Annotations"), annotationsList(json.annotations));
  const referrers = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  parts.push(h("h2", {}, "Referrers (signatures, SBOMs, attestations)"), referrers);
  show(...parts);
  try {
    const { json: index } = await regJson(`/v2/${repoPath(name)}/referrers/${digest}`);
    referrers.replaceChildren(table(["Artifact type", "Digest", "Size"],
      (index.manifests || []).map((m) => h("tr", {}, h("td", {}, m.artifactType || m.mediaType),
        h("td", {}, h("a", { class: "mono", href: `#/r/${name}@${m.digest}` }, short(m.digest))), h("td", {}, size(m.size)))), "No referrers."));
  } catch (e) { referrers.replaceChildren(h("p", { class: "muted" }, e.message)); }
}

async function tokensScreen() {
  const { tokens: list } = await api("GET", "/api/tokens");
  const name = h("input", { required: true, maxlength: "100" });
  const scopes = h("input", { placeholder: "repository:alice/*:pull,push (empty: all your rights)", size: "40" });
  const days = h("input", { type: "number", min: "1", max: "3650", placeholder: "never" });
  const secret = h("div", {});
  const create = async (ev) => {
    ev.preventDefault();
    try {
      const made = await api("POST", "/api/tokens", { name: name.value.trim(),
        scopes: scopes.value.split(/[\s,]+(?=repository:)/).map((s) => s.trim()).filter(Boolean),
        expires_in_days: days.value ? Number(days.value) : undefined });
      secret.replaceChildren(h("section", { class: "panel" },
        h("p", {}, h("strong", {}, "Copy this token now: it is not shown again.")),
        h("div", { class: "pull" }, h("code", { id: "new-token", class: "secret" }, made.token), copyButton(made.token)),
        h("p", { class: "muted" }, "Use it as the password: ", h("code", {}, `docker login ${location.host} -u ${me.user}`))));
      refreshList();
    } catch (e) { fail(e); }
  };
  const listBox = h("div", {});
  const refreshList = async () => {
    const { tokens: fresh } = await api("GET", "/api/tokens");
    listBox.replaceChildren(tokenTable(fresh));
  };
  const tokenTable = (items) => table(["Name", "Scopes", "Created", "Expires", ""],
    items.map((t) => h("tr", {}, h("td", {}, t.name, " ", h("span", { class: "muted mono" }, t.id)),
      h("td", {}, t.scopes.length ? t.scopes.map((s) => h("div", {}, h("code", {}, `${s.repository}: ${s.actions.join(",")}`))) : "all your rights"),
      h("td", {}, when(t.created_at_ms)), h("td", {}, t.expires_at_ms ? when(t.expires_at_ms) : "never"),
      h("td", {}, t.revoked_at_ms ? h("span", { class: "badge" }, "revoked") : h("button", { class: "danger", type: "button",
        onclick: async () => { try { await api("DELETE", `/api/tokens/${t.id}`); toast("Revoked"); refreshList(); } catch (e) { fail(e); } } }, "Revoke")))),
    "No access tokens yet.");
  listBox.replaceChildren(tokenTable(list));
  show(h("h1", {}, "Access tokens"),
    h("p", { class: "muted" }, "For docker, skopeo, oras, helm and CI: a token is the password of your user name."),
    h("form", { class: "row panel", onsubmit: create, id: "new-token-form" }, field("Name", name), field("Scopes", scopes),
      field("Expires in days", days), h("button", { class: "primary", type: "submit" }, "Create token")),
    secret, listBox);
}

async function passkeysScreen() {
  const listBox = h("div", {});
  const refresh = async () => {
    const { passkeys } = await api("GET", "/api/passkeys");
    listBox.replaceChildren(table(["Name", "Added", "Last used", ""], passkeys.map((p) => h("tr", {},
      h("td", {}, p.name), h("td", {}, when(p.created_at_ms)), h("td", {}, when(p.last_used_at_ms)),
      h("td", {}, h("button", { class: "danger", type: "button", onclick: async () => {
        try { await api("DELETE", `/api/passkeys/${encodeURIComponent(p.id)}`); toast("Removed"); refresh(); } catch (e) { fail(e); }
      } }, "Remove"))))));
  };
  const name = h("input", { required: true, maxlength: "64", placeholder: "laptop, phone, security key" });
  show(h("h1", {}, "Passkeys"),
    h("form", { class: "row panel", id: "add-passkey", onsubmit: async (ev) => {
      ev.preventDefault();
      try { await register("/api/passkeys/start", "/api/passkeys/finish", {}, name.value.trim()); toast("Passkey added"); refresh(); }
      catch (e) { fail(e); }
    } }, field("Name", name), h("button", { class: "primary", type: "submit" }, "Add a passkey")),
    listBox);
  await refresh();
}

async function orgsScreen() {
  const { orgs } = await api("GET", "/api/orgs");
  const name = h("input", { required: true, maxlength: "39" });
  show(h("h1", {}, "Organizations"),
    h("form", { class: "row panel", id: "new-org", onsubmit: async (ev) => {
      ev.preventDefault();
      try { await api("POST", "/api/orgs", { name: name.value.trim() }); location.hash = `#/o/${name.value.trim()}`; } catch (e) { fail(e); }
    } }, field("New organization", name), h("button", { class: "primary", type: "submit" }, "Create")),
    table(["Name", "Your role", "Created"], orgs.map((o) => h("tr", {},
      h("td", {}, h("a", { href: `#/o/${o.name}` }, o.name)), h("td", {}, o.role || "—"), h("td", {}, when(o.created_at_ms)))),
      "You belong to no organization."));
}

async function orgScreen(org) {
  const base = `/api/orgs/${encodeURIComponent(org)}`;
  const act = (fn) => async (ev) => { ev?.preventDefault?.(); try { await fn(); route(); } catch (e) { fail(e); } };
  const [members, teams, robots, grants, roles, audit] = await Promise.all(
    ["members", "teams", "robots", "grants", "roles", "audit?limit=50"].map((p) => api("GET", `${base}/${p}`).catch((e) => ({ error: e }))));
  const roleNames = (roles.roles || []).map((r) => r.name);
  const roleSelect = () => h("select", {}, roleNames.map((r) => h("option", { value: r }, r)));
  const memberUser = h("input", { required: true }), memberRole = roleSelect();
  const teamName = h("input", { required: true });
  const robotName = h("input", { required: true });
  const grantPrincipal = h("input", { required: true, placeholder: "team:dev, user:bob, robot:ci" });
  const grantResource = h("input", { required: true, placeholder: `${org}/* or ${org}/app:v*` });
  const grantRole = roleSelect();
  const secretBox = h("div", {});
  const showSecret = (secret, text) => secretBox.replaceChildren(h("section", { class: "panel" }, h("p", {}, h("strong", {}, text)),
    h("div", { class: "pull" }, h("code", { class: "secret" }, secret), copyButton(secret))));
  const roleName = h("input", { required: true, placeholder: "ci-pusher" });
  const roleActions = h("input", { required: true, placeholder: "pull, push", size: "30" });
  const section = (title, result, content) => h("section", { id: title.toLowerCase().replace(/\s+/g, "-") },
    h("h2", {}, title), result.error ? h("p", { class: "error" }, result.error.message) : content);
  show(h("p", {}, h("a", { href: "#/orgs" }, "Organizations"), " /"), h("h1", {}, org),
    section("Members", members, [
      table(["User", "Role", ""], (members.members || []).map((m) => h("tr", {}, h("td", {}, m.user), h("td", {}, m.role),
        h("td", {}, h("button", { class: "danger", type: "button", onclick: act(() => api("DELETE", `${base}/members/${m.user}`)) }, "Remove"))))),
      h("form", { class: "row", id: "add-member", onsubmit: act(() => api("PUT", `${base}/members/${memberUser.value.trim()}`, { role: memberRole.value })) },
        field("User", memberUser), field("Role", memberRole), h("button", { type: "submit" }, "Add or change"))]),
    section("Teams", teams, [
      table(["Team", "Members", ""], (teams.teams || []).map((t) => {
        const user = h("input", { "aria-label": `Add a member to ${t.name}`, placeholder: "user" });
        return h("tr", {}, h("td", {}, t.name),
          h("td", {}, t.members.map((u) => h("span", { class: "badge" }, u, " ",
            h("button", { type: "button", "aria-label": `Remove ${u} from ${t.name}`, onclick: act(() => api("DELETE", `${base}/teams/${t.name}/members/${u}`)) }, "×"))),
            h("form", { class: "row", onsubmit: act(() => api("PUT", `${base}/teams/${t.name}/members/${user.value.trim()}`, {})) }, user, h("button", { type: "submit" }, "Add"))),
          h("td", {}, h("button", { class: "danger", type: "button", onclick: act(() => api("DELETE", `${base}/teams/${t.name}`)) }, "Delete")));
      })),
      h("form", { class: "row", id: "new-team", onsubmit: act(() => api("POST", `${base}/teams`, { name: teamName.value.trim() })) },
        field("New team", teamName), h("button", { type: "submit" }, "Create team"))]),
    section("Robots", robots, [
      table(["Robot", "Created", "Expires", ""], (robots.robots || []).map((r) => h("tr", {}, h("td", {}, h("code", {}, `${org}+${r.name}`)),
        h("td", {}, when(r.created_at_ms)), h("td", {}, r.expires_at_ms ? when(r.expires_at_ms) : "never"),
        h("td", {}, h("div", { class: "row" },
          h("button", { type: "button", onclick: async () => {
            try { showSecret((await api("POST", `${base}/robots/${r.name}/secret`)).secret, "The robot's new secret (the old one stops working), shown once:"); }
            catch (e) { fail(e); }
          } }, "Rotate secret"),
          h("button", { class: "danger", type: "button", onclick: act(() => api("DELETE", `${base}/robots/${r.name}`)) }, "Delete")))))),
      h("form", { class: "row", onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const made = await api("POST", `${base}/robots`, { name: robotName.value.trim() });
          showSecret(made.secret, `The secret of ${org}+${made.name}, shown once (docker login -u '${org}+${made.name}'):`);
        } catch (e) { fail(e); }
      } }, field("New robot", robotName), h("button", { type: "submit" }, "Create robot")), secretBox]),
    section("Grants", grants, [
      table(["Who", "Resource", "Role or actions", ""], (grants.grants || []).map((g) => h("tr", {}, h("td", {}, g.principal),
        h("td", {}, h("code", {}, g.resource)), h("td", {}, g.role || g.actions.join(", ")),
        h("td", {}, h("button", { class: "danger", type: "button", onclick: act(() => api("DELETE", `${base}/grants/${g.id}`)) }, "Revoke"))))),
      h("form", { class: "row", id: "new-grant", onsubmit: act(() => api("POST", `${base}/grants`, { principal: grantPrincipal.value.trim(), resource: grantResource.value.trim(), role: grantRole.value })) },
        field("Who", grantPrincipal), field("Resource", grantResource), field("Role", grantRole), h("button", { type: "submit" }, "Grant"))]),
    section("Roles", roles, [table(["Role", "Actions", ""], (roles.roles || []).map((r) => h("tr", {}, h("td", {}, r.name),
      h("td", {}, r.actions.join(", ")), h("td", {}, r.builtin ? h("span", { class: "badge" }, "built in")
        : h("button", { class: "danger", type: "button", onclick: act(() => api("DELETE", `${base}/roles/${r.name}`)) }, "Delete"))))),
      h("form", { class: "row", id: "new-role", onsubmit: act(() => api("PUT", `${base}/roles/${roleName.value.trim()}`,
        { actions: roleActions.value.split(/[\s,]+/).filter(Boolean) })) },
        field("Custom role", roleName), field("Actions", roleActions), h("button", { type: "submit" }, "Save role"))]),
    h("section", { id: "danger-zone" }, h("h2", {}, "Delete the organization"),
      h("p", { class: "muted" }, "Owners only. Its repositories must be deleted first."),
      h("button", { class: "danger", type: "button", onclick: async () => {
        if (!confirm(`Delete ${org}? This cannot be undone.`)) return;
        try { await api("DELETE", base); toast(`${org} deleted`); location.hash = "#/orgs"; } catch (e) { fail(e); }
      } }, `Delete ${org}`)),
    section("Audit log", audit, table(["When", "Who", "What", "Target", "Detail"], (audit.entries || []).map((e) => h("tr", {},
      h("td", {}, when(e.at_ms)), h("td", {}, e.actor), h("td", {}, h("code", {}, e.action)), h("td", {}, e.target), h("td", {}, e.detail))), "Nothing yet.")));
}

// ---------- routing ----------
function navigation() {
  const here = location.hash || "#/";
  const link = (href, text) => h("a", { href, "aria-current": (href === "#/" ? here === "#/" || here.startsWith("#/r/") || here.startsWith("#/?") : here.startsWith(href)) ? "page" : null }, text);
  const items = [link("#/", "Repositories")];
  if (me.user) items.push(link("#/tokens", "Tokens"), link("#/passkeys", "Passkeys"), link("#/orgs", "Organizations"));
  document.getElementById("nav").replaceChildren(...items);
  const who = document.getElementById("who");
  if (me.user) {
    who.replaceChildren(h("span", { id: "signed-in-as" }, me.user), h("button", { type: "button", id: "sign-out", onclick: async () => {
      await api("DELETE", "/api/session").catch(() => {});
      me = { user: null, passkeys: me.passkeys, signup: me.signup };
      tokens.clear();
      // One render: the hash change routes (a second one would wipe what is being typed).
      if (location.hash === "#/signin") await route(); else location.hash = "#/signin";
    } }, "Sign out"));
  } else if (authOn && me.passkeys) {
    who.replaceChildren(h("a", { href: "#/signin", id: "sign-in-link" }, "Sign in"));
  } else {
    who.replaceChildren(authOn ? "" : h("span", { class: "badge" }, "open mode: no sign-in"));
  }
}

async function route() {
  navigation();
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const [path, search] = hash.split("?");
  const query = new URLSearchParams(search || "");
  const needsUser = ["/tokens", "/passkeys", "/orgs"].some((p) => path === p) || path.startsWith("/o/");
  try {
    if (path === "/signin") return me.user ? repositoriesScreen(query) : signInScreen();
    if (needsUser && !me.user) return signInScreen();
    if (path === "/tokens") return await tokensScreen();
    if (path === "/passkeys") return await passkeysScreen();
    if (path === "/orgs") return await orgsScreen();
    if (path.startsWith("/o/")) return await orgScreen(path.slice(3));
    if (path.startsWith("/r/")) {
      const rest = path.slice(3);
      const at = rest.lastIndexOf("@");
      return at > 0 ? await manifestScreen(rest.slice(0, at), rest.slice(at + 1)) : await repositoryScreen(rest);
    }
    return await repositoriesScreen(query);
  } catch (e) {
    if (e.status === 401) return signInScreen();
    show(h("h1", {}, "Something went wrong"), h("p", { class: "error" }, e.message));
  }
}

async function start() {
  try { me = await api("GET", "/api/session"); authOn = true; }
  catch (e) { authOn = e.status !== 404; me = { user: null }; }
  await route();
}

window.addEventListener("hashchange", route);
start();
