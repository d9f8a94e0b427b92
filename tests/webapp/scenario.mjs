// The web app, end to end in Debian's Chromium (headless, driven by playwright-core): passkey
// sign-up and sign-in with the CDP virtual authenticator, an access token pushed with by skopeo,
// browsing the pushed image, visibility, an org team, passkeys added and removed, and every
// refusal (replayed challenge, wrong origin, wrong rpId, bad signature, cloned authenticator,
// cross-site POSTs). Run by tests/e2e/test_webapp.py, which starts the registry:
//
//   BASE_URL=http://localhost:<port> LAYOUT=<oci layout with tag v1> node tests/webapp/scenario.mjs
//
// Optional: CHROMIUM (default /usr/bin/chromium), SKOPEO, SCREENSHOTS (a directory for PNGs).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const BASE = process.env.BASE_URL;
const LAYOUT = process.env.LAYOUT;
const SHOTS = process.env.SCREENSHOTS;
assert.ok(BASE && LAYOUT, "BASE_URL and LAYOUT are required");
const host = new URL(BASE).host;
const started = Date.now();
const step = (text) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${text}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
let failed = false;
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 }, colorScheme: "light" });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (e) => { console.error("page error:", e.message); failed = true; });
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const authenticatorOptions = { protocol: "ctap2", transport: "internal", hasResidentKey: true,
    hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true };
  const addAuthenticator = async () =>
    (await cdp.send("WebAuthn.addVirtualAuthenticator", { options: authenticatorOptions })).authenticatorId;
  const shot = async (name) => {
    if (SHOTS) await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
  };
  const signedInAs = (user) => page.locator("#signed-in-as", { hasText: user }).waitFor();
  const cookieHeader = async () => (await context.cookies(BASE)).map((c) => `${c.name}=${c.value}`).join("; ");

  // --- sign-up and sign-in with a passkey ---
  let authenticator = await addAuthenticator();
  await page.goto(`${BASE}/#/signin`);
  await shot("sign-in");
  await page.fill("input[name=user]", "alice");
  await page.click("#sign-up");
  await signedInAs("alice");
  step("signed up as alice with a passkey (virtual authenticator)");
  const cookie = (await context.cookies(BASE)).find((c) => c.name === "__Host-openregistry-session");
  assert.ok(cookie, "the session cookie is set");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.secure, true);
  assert.equal(cookie.sameSite, "Strict");

  await page.click("#sign-out");
  await page.locator("#sign-in").waitFor();
  // The browser's cookie store takes the removal a moment after the response (seen on workerd).
  let left = [];
  for (let i = 0; i < 50; i++) {
    left = (await context.cookies(BASE)).filter((c) => c.name === "__Host-openregistry-session");
    if (!left.length) break;
    await page.waitForTimeout(100);
  }
  assert.equal(left.length, 0, `signing out removes the cookie: ${JSON.stringify(left)}`);
  await page.fill("input[name=user]", "alice");
  await page.click("#sign-in");
  await signedInAs("alice");
  step("signed out, and in again with the passkey");

  // --- an access token, and a push with it ---
  await page.goto(`${BASE}/#/tokens`);
  await page.fill("#new-token-form input >> nth=0", "ci");
  await page.click("#new-token-form button[type=submit]");
  const token = (await page.locator("#new-token").textContent()).trim();
  assert.match(token, /^orp_/);
  await shot("tokens");
  execFileSync(process.env.SKOPEO || "skopeo", ["copy", "--dest-tls-verify=false",
    "--dest-creds", `alice:${token}`, `oci:${LAYOUT}:v1`, `docker://${host}/alice/app:v1`], { stdio: "pipe" });
  step("created an access token in the web app and pushed alice/app:v1 with skopeo");

  // --- browsing the pushed image ---
  await page.goto(`${BASE}/#/`);
  await page.click("a:text-is('alice/app')");
  await page.locator("td code", { hasText: /^v1$/ }).waitFor();
  await page.locator("td a.mono").first().waitFor();
  await page.locator("code", { hasText: `docker pull ${host}/alice/app:v1` }).waitFor();
  await shot("repository");
  await page.locator("td a.mono").first().click();
  await page.locator("h2", { hasText: "Layers" }).waitFor();
  await page.locator("td", { hasText: "application/vnd.oci.image.layer.v1.tar+gzip" }).first().waitFor();
  await page.locator("dd", { hasText: "linux/amd64" }).waitFor();
  await shot("manifest");
  if (SHOTS) {
    await page.emulateMedia({ colorScheme: "dark" });
    await shot("manifest-dark");
    await page.emulateMedia({ colorScheme: "light" });
  }
  step("browsed the repository, its tag, the manifest's layers and config");

  // --- visibility ---
  const anonymousPull = async () => {
    const t = await fetch(`${BASE}/token?service=openregistry&scope=repository:alice/app:pull`);
    const { token: bearer } = await t.json();
    return (await fetch(`${BASE}/v2/alice/app/tags/list`, { headers: { authorization: `Bearer ${bearer}` } })).status;
  };
  assert.equal(await anonymousPull(), 401, "a private repository is not pulled anonymously");
  await page.goto(`${BASE}/#/r/alice/app`);
  await page.locator("#visibility", { hasText: "private" }).waitFor();
  await page.click("#toggle-visibility");
  await page.locator("#visibility", { hasText: "public" }).waitFor();
  assert.equal(await anonymousPull(), 200, "a public repository is pulled anonymously");
  step("made alice/app public in the web app; an anonymous pull works");

  // --- an organization and a team ---
  await page.goto(`${BASE}/#/orgs`);
  await page.fill("#new-org input", "acme");
  await page.click("#new-org button");
  await page.locator("h1", { hasText: "acme" }).waitFor();
  await page.fill("#new-team input", "dev");
  await page.click("#new-team button");
  const devRow = page.locator("#teams tr", { has: page.locator("td:text-is('dev')") });
  await devRow.waitFor();
  await devRow.locator("input").fill("alice");
  await devRow.locator("button:text-is('Add')").click();
  await page.locator("#teams tr", { has: page.locator("td:text-is('dev')") }).locator(".badge", { hasText: "alice" }).waitFor();
  await page.fill("#new-grant input >> nth=0", "team:dev");
  await page.fill("#new-grant input >> nth=1", "acme/*");
  await page.click("#new-grant button");
  await page.locator("#grants td", { hasText: "team:dev" }).waitFor();
  await page.fill("#new-role input >> nth=0", "ci-pusher");
  await page.fill("#new-role input >> nth=1", "pull, push");
  await page.click("#new-role button");
  await page.locator("#roles td:text-is('ci-pusher')").waitFor();
  await page.locator("code", { hasText: "team.member.add" }).first().waitFor();
  await shot("organization");
  step("created org acme, team dev with alice in it, a grant, a custom role; the audit log shows it");

  // --- passkeys: add one from a second authenticator, remove the first ---
  const firstCredentials = (await cdp.send("WebAuthn.getCredentials", { authenticatorId: authenticator })).credentials;
  assert.equal(firstCredentials.length, 1);
  await cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId: authenticator });
  authenticator = await addAuthenticator();
  await page.goto(`${BASE}/#/passkeys`);
  await page.locator("td", { hasText: "first passkey" }).waitFor();
  await page.fill("#add-passkey input", "backup key");
  await page.click("#add-passkey button");
  await page.locator("td", { hasText: "backup key" }).waitFor();
  await shot("passkeys");
  await page.locator("tr", { has: page.locator("td:text-is('first passkey')") }).locator("button").click();
  await page.locator("td:text-is('first passkey')").waitFor({ state: "detached" });
  const lastRemove = await page.evaluate(async () => {
    const me = await (await fetch("/api/session")).json();
    const { passkeys } = await (await fetch("/api/passkeys")).json();
    const r = await fetch(`/api/passkeys/${passkeys[0].id}`, { method: "DELETE", headers: { "x-openregistry-csrf": me.csrf } });
    return r.status;
  });
  assert.equal(lastRemove, 409, "the last passkey cannot be removed");
  await page.click("#sign-out");
  await page.fill("input[name=user]", "alice");
  await page.click("#sign-in");
  await signedInAs("alice");
  step("added a passkey from a second authenticator, removed the first, signed in with the new one");

  // --- refusals of the sign-in ceremony ---
  // One ceremony in the page, with the browser's answer tampered with as `tamper` says; the
  // status of each finish request.
  const ceremony = (tamper, times = 1) => page.evaluate(async ({ tamper, times }) => {
    const b64d = (t) => { const s = t.replace(/-/g, "+").replace(/_/g, "/"); return Uint8Array.from(atob(s + "===".slice((s.length + 3) % 4)), (c) => c.charCodeAt(0)); };
    const b64e = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    const post = (path, body) => fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const { ceremony, options } = await (await post("/api/session/start", { user: "alice" })).json();
    const pk = options.publicKey;
    const cred = await navigator.credentials.get({ publicKey: { ...pk, challenge: b64d(pk.challenge),
      allowCredentials: pk.allowCredentials.map((c) => ({ ...c, id: b64d(c.id) })) } });
    let clientData = new Uint8Array(cred.response.clientDataJSON);
    let authData = new Uint8Array(cred.response.authenticatorData);
    let signature = new Uint8Array(cred.response.signature);
    if (tamper === "origin") {
      const json = JSON.parse(new TextDecoder().decode(clientData));
      json.origin = "https://evil.example";
      clientData = new TextEncoder().encode(JSON.stringify(json));
    }
    if (tamper === "rpid") { authData = authData.slice(); authData[0] ^= 1; }
    if (tamper === "signature") { signature = signature.slice(); signature[signature.length - 1] ^= 1; }
    const body = { ceremony, credential: { id: cred.id, rawId: b64e(cred.rawId), type: cred.type,
      response: { authenticatorData: b64e(authData), clientDataJSON: b64e(clientData), signature: b64e(signature),
        userHandle: cred.response.userHandle ? b64e(cred.response.userHandle) : null }, extensions: {} } };
    const out = [];
    for (let i = 0; i < times; i++) out.push((await post("/api/session/finish", body)).status);
    return out;
  }, { tamper, times });
  assert.deepEqual(await ceremony("none", 2), [200, 401], "a replayed challenge is refused");
  assert.deepEqual(await ceremony("origin"), [401], "a wrong origin is refused");
  assert.deepEqual(await ceremony("rpid"), [401], "a wrong rpId is refused");
  assert.deepEqual(await ceremony("signature"), [401], "a bad signature is refused");
  step("refused: a replayed challenge, a wrong origin, a wrong rpId, a bad signature");

  // A cloned authenticator: the same credential at an older counter.
  const [current] = (await cdp.send("WebAuthn.getCredentials", { authenticatorId: authenticator })).credentials;
  assert.ok(current.signCount >= 3, `the passkey was used (signCount ${current.signCount})`);
  await cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId: authenticator });
  authenticator = await addAuthenticator();
  await cdp.send("WebAuthn.addCredential", { authenticatorId: authenticator, credential: { ...current, signCount: 0 } });
  assert.deepEqual(await ceremony("none"), [401], "a counter that goes backwards (a cloned authenticator) is refused");
  step("refused: a cloned authenticator (its counter went backwards)");

  // --- cross-site requests ---
  const session = await cookieHeader();
  const viaApi = async (headers) => (await fetch(`${BASE}/api/tokens`, { method: "POST",
    headers: { cookie: session, "content-type": "application/json", ...headers }, body: JSON.stringify({ name: "x" }) })).status;
  const me = await page.evaluate(async () => (await fetch("/api/session")).json());
  assert.equal(await viaApi({ origin: BASE }), 403, "no CSRF token: refused");
  assert.equal(await viaApi({ origin: BASE, "x-openregistry-csrf": "0".repeat(64) }), 403, "a wrong CSRF token: refused");
  assert.equal(await viaApi({ origin: "https://evil.example", "x-openregistry-csrf": me.csrf }), 403, "another origin: refused");
  assert.equal(await viaApi({ origin: BASE, "x-openregistry-csrf": me.csrf }), 201, "the web app's own request passes");
  // A real cross-site page posting a form at the registry with the signed-in browser.
  await page.route("http://evil.test/**", (route) => route.fulfill({ contentType: "text/html", body:
    `<form id=f method=POST enctype=text/plain action="${BASE}/api/tokens"><input name='{"name":"stolen","x":"' value='"}'></form>
     <script>document.getElementById('f').submit()</script>` }));
  const before = (await (await fetch(`${BASE}/api/tokens`, { headers: { cookie: session } })).json()).tokens.length;
  await page.goto("http://evil.test/");
  await page.waitForLoadState("load");
  await page.waitForTimeout(500);
  const after = (await (await fetch(`${BASE}/api/tokens`, { headers: { cookie: session } })).json()).tokens.length;
  assert.equal(after, before, "a cross-site form POST created nothing");
  step("refused: cross-site POSTs (no or wrong CSRF token, another origin, a form on another site)");
} catch (e) {
  console.error(e);
  failed = true;
  if (page) {
    console.error(`the page at ${page.url()}:\n${(await page.locator("main").innerText().catch(() => "?")).slice(0, 3000)}`);
    if (process.env.FAILURE_SHOT) await page.screenshot({ path: process.env.FAILURE_SHOT, fullPage: true }).catch(() => {});
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
