// Interop test: the Hydrogen web client SDK (hydrogen-view-sdk) in headless Chromium against a
// running weft.
// Usage: node test.mjs <homeserver base url> <test page url> [log dir]
//
// The page (page.js, built by vite and served from loopback by scripts/interop-hydrogen.sh)
// runs Hydrogen's Client; this driver steers it with playwright-core over page.evaluate and
// plays the other users with plain fetch against the client-server API. Hydrogen logs in with
// a password and syncs; an invite reaches it and it joins; messages go both ways;
// back-pagination fills the gap to the room's creation; and two Hydrogen sessions talk in an
// encrypted room (olm/megolm: keys uploaded, queried, claimed, room keys sent to-device).

import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [baseUrl, pageUrl, logDirArg] = process.argv.slice(2);
if (!baseUrl || !pageUrl) {
    console.error("usage: node test.mjs <homeserver base url> <test page url> [log dir]");
    process.exit(2);
}
const logDir = logDirArg ?? mkdtempSync(join(tmpdir(), "weft-hydrogen-"));
const browserLog = join(logDir, "browser.log");
const homeserverOrigin = new URL(baseUrl).origin;
const say = (line) => process.stdout.write(`${line}\n`);
const note = (line) => appendFileSync(browserLog, `${new Date().toISOString()} ${line}\n`);

const CHECK_TIMEOUT_MS = 60_000;
const WAIT_MS = 30_000;
const run = Date.now().toString(36);
const password = "interop-password-1";
const serverName = "localhost";

// --- the client-server API with plain fetch (the other users) ---

// A failed request names method, path, status and body, so a weft bug reads straight off it.
async function api(method, path, { token, body, expect = [200] } = {}) {
    const response = await fetch(`${baseUrl}${path}`, {
        method,
        headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body ? { "Content-Type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    let json;
    try {
        json = text ? JSON.parse(text) : {};
    } catch {
        json = undefined;
    }
    if (!expect.includes(response.status)) {
        throw new Error(`${method} ${path} answered ${response.status}: ${text.slice(0, 2000)}`);
    }
    return { status: response.status, body: json };
}

const enc = encodeURIComponent;
let txnCounter = 0;

// Registration through user-interactive auth: the first POST gets a 401 with a session, the
// second completes m.login.dummy.
async function register(localpart, { inhibitLogin = false } = {}) {
    const request = { username: localpart, password, inhibit_login: inhibitLogin, initial_device_display_name: "interop driver" };
    const challenge = await api("POST", "/_matrix/client/v3/register", { body: request, expect: [401] });
    assert.ok(challenge.body.session, `the 401 carries a UIA session: ${JSON.stringify(challenge.body)}`);
    assert.ok(challenge.body.flows?.some((f) => f.stages?.includes("m.login.dummy")), "m.login.dummy is offered");
    const done = await api("POST", "/_matrix/client/v3/register", { body: { ...request, auth: { type: "m.login.dummy", session: challenge.body.session } } });
    return { userId: done.body.user_id, token: done.body.access_token };
}

async function sendText(user, roomId, body) {
    const txn = `${run}-${++txnCounter}`;
    const { body: sent } = await api("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${txn}`, {
        token: user.token,
        body: { msgtype: "m.text", body },
    });
    return sent.event_id;
}

async function createRoom(user, options) {
    const { body } = await api("POST", "/_matrix/client/v3/createRoom", { token: user.token, body: options });
    return body.room_id;
}

async function eventually(what, check, timeoutMs = WAIT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = await check();
        if (value !== undefined && value !== null && value !== false) return value;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

// /sync from `since` until an event in `roomId`'s timeline matches `pick`.
async function syncUntil(user, since, roomId, what, pick) {
    const deadline = Date.now() + WAIT_MS;
    let token = since;
    while (Date.now() < deadline) {
        const { body } = await api("GET", `/_matrix/client/v3/sync?timeout=5000&since=${enc(token)}`, { token: user.token });
        token = body.next_batch;
        const found = (body.rooms?.join?.[roomId]?.timeline?.events ?? []).find(pick);
        if (found) return found;
    }
    throw new Error(`timed out after ${WAIT_MS} ms waiting at ${user.userId}'s /sync for ${what}`);
}

async function currentSyncToken(user) {
    const { body } = await api("GET", "/_matrix/client/v3/sync?timeout=0", { token: user.token });
    return body.next_batch;
}

// --- the browser ---

const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    // Playwright gives the browser a fresh temporary profile (user-data-dir) and each context
    // below its own storage. Without the background-networking flags Chromium's connections
    // get refused on a closed network.
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

// A page with the Hydrogen test page loaded, in its own browser context (its own IndexedDB).
async function openHydrogenPage(label) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("console", (message) => note(`[${label} console.${message.type()}] ${message.text()}`));
    page.on("pageerror", (error) => note(`[${label} pageerror] ${error.stack ?? error}`));
    page.on("requestfailed", (request) => note(`[${label} requestfailed] ${request.method()} ${request.url()} ${request.failure()?.errorText}`));
    // Every client-server request Hydrogen makes (but the /sync long-polls, only counted), with
    // the body of any error answer: where to look first when a check fails.
    let syncs = 0;
    page.on("response", async (response) => {
        const url = new URL(response.url());
        const status = response.status();
        const what = `${response.request().method()} ${url.origin === homeserverOrigin ? url.pathname : url.href} ${status}`;
        if (url.origin === homeserverOrigin && url.pathname.endsWith("/sync") && status < 400) {
            if (++syncs % 10 === 1) note(`[${label} http] ${what} (sync #${syncs})`);
        } else if (status >= 400) {
            note(`[${label} http] ${what}: ${(await response.text().catch(() => "")).slice(0, 2000)}`);
        } else if (url.origin === homeserverOrigin) {
            note(`[${label} http] ${what}`);
        }
    });
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.hydrogenReady === true, null, { timeout: WAIT_MS });
    // Calls window.hydrogen[method](...args) in the page.
    const call = (method, ...args) => page.evaluate(({ method, args }) => window.hydrogen[method](...args), { method, args });
    return { page, call };
}

// --- checks ---

const EXPECTED_CHECKS = 5;
const checks = [];
async function check(name, body) {
    process.stdout.write(`- ${name} ... `);
    let timer;
    try {
        await Promise.race([
            body(),
            new Promise((_, reject) => {
                timer = setTimeout(() => reject(new Error(`check timed out after ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
            }),
        ]);
        say("ok");
        checks.push([name, true]);
        return true;
    } catch (error) {
        say("FAILED");
        say(String(error?.stack ?? error).split("\n").filter((l) => !l.includes("node_modules/playwright-core")).join("\n"));
        checks.push([name, false]);
        return false;
    } finally {
        clearTimeout(timer);
    }
}
const needs = (ok, what) => {
    if (!ok) throw new Error(`not run: needs ${what}`);
};

let hydrogen, hydrogenUser, bob;
let mainRoom;
try {
    const loggedIn = await check("Hydrogen logs in with a password (queryLogin + startWithLogin) and reaches Ready", async () => {
        await register(`hyd${run}`, { inhibitLogin: true });
        bob = await register(`hbob${run}`);
        hydrogen = await openHydrogenPage("hydrogen");
        const login = await hydrogen.call("login", baseUrl, `hyd${run}`, password);
        note(`login: ${JSON.stringify(login)}`);
        assert.equal(login.status, "Ready", `load status ${login.status} (${login.statuses.join(" > ")})`);
        assert.equal(login.userId, `@hyd${run}:${serverName}`);
        assert.ok(login.deviceId, "a device id");
        assert.ok(login.hasOlm, "olm loaded (E2EE available)");
        assert.equal(login.syncStatus, "Syncing", "the sync loop is running after the first sync");
        hydrogenUser = { userId: login.userId, deviceId: login.deviceId };
        // weft knows the device Hydrogen's login created.
        const { body: keys } = await api("POST", "/_matrix/client/v3/keys/query", { token: bob.token, body: { device_keys: { [login.userId]: [] } } });
        assert.ok(keys.device_keys?.[login.userId]?.[login.deviceId], `Hydrogen's device keys were uploaded: ${JSON.stringify(keys)}`);
    });
    if (!loggedIn) throw new Error("stopping: nothing else can run without a logged-in Hydrogen");

    const joined = await check("an invite from another user reaches session.invites; invite.accept() puts the room in session.rooms", async () => {
        const name = `hydrogen ${run}`;
        mainRoom = await createRoom(bob, { name, invite: [hydrogenUser.userId], preset: "private_chat" });
        const invite = await hydrogen.call("waitForInvite", mainRoom);
        assert.equal(invite.name, name, "the invite's stripped state names the room");
        assert.equal(invite.inviter, bob.userId, "the inviter is known from the stripped state");
        const room = await hydrogen.call("acceptInvite", mainRoom);
        assert.equal(room.membership, "join");
        assert.equal(room.name, name);
        await eventually("bob to see Hydrogen's user joined", async () => {
            const { body } = await api("GET", `/_matrix/client/v3/rooms/${enc(mainRoom)}/joined_members`, { token: bob.token });
            return body.joined?.[hydrogenUser.userId];
        });
    });

    await check("messages both ways: the other user's message reaches the open timeline, Hydrogen's sendEvent reaches the other user", async () => {
        needs(joined, "the room joined in the previous check");
        await hydrogen.call("openTimeline", mainRoom);
        const sentByBob = await sendText(bob, mainRoom, "hello from bob");
        const atHydrogen = await hydrogen.call("waitForBody", mainRoom, "hello from bob");
        assert.equal(atHydrogen.id, sentByBob);
        assert.equal(atHydrogen.sender, bob.userId);

        const since = await currentSyncToken(bob);
        const { eventId } = await hydrogen.call("sendText", mainRoom, "hello from hydrogen");
        assert.match(eventId, /^\$/, "the send queue got an event id back");
        const atBob = await syncUntil(bob, since, mainRoom, "Hydrogen's message", (e) => e.content?.body === "hello from hydrogen");
        assert.equal(atBob.event_id, eventId);
        assert.equal(atBob.sender, hydrogenUser.userId);
        assert.equal(atBob.content.msgtype, "m.text");
    });

    await check("back-pagination: room.fillGap (/messages) and timeline.loadAtTop reach the room's creation, history in order", async () => {
        const room = await createRoom(bob, { name: `hydrogen history ${run}`, preset: "private_chat" });
        const fillers = Array.from({ length: 25 }, (_, i) => `filler ${i}`);
        for (const body of fillers) await sendText(bob, room, body);
        await api("POST", `/_matrix/client/v3/rooms/${enc(room)}/invite`, { token: bob.token, body: { user_id: hydrogenUser.userId } });
        await hydrogen.call("waitForInvite", room);
        await hydrogen.call("acceptInvite", room);
        const initial = await hydrogen.call("openTimeline", room);
        note(`history initial timeline: ${JSON.stringify(initial)}`);
        assert.ok(!initial.some((e) => e.type === "m.room.create"), "the join's limited timeline does not reach the creation");
        assert.ok(initial[0]?.kind === "boundary" && initial[0].isGap, `the timeline starts with a gap: ${JSON.stringify(initial[0])}`);
        const { fills, entries } = await hydrogen.call("fillGapsToStart", room, 10);
        note(`history after ${fills} fills: ${JSON.stringify(entries.map((e) => e.body ?? e.type ?? e.kind))}`);
        assert.ok(fills >= 2, `more than one page of /messages (${fills})`);
        const events = entries.filter((e) => e.kind === "event");
        assert.equal(events[0].type, "m.room.create", "the timeline now starts at m.room.create");
        assert.ok(!entries.some((e) => e.kind === "boundary" && e.isGap), "no gap left");
        assert.deepEqual(events.map((e) => e.body).filter((b) => b?.startsWith("filler")), fillers, "all fillers, in order, once each");
        const ids = events.map((e) => e.id);
        assert.equal(new Set(ids).size, ids.length, "no event twice");
    });

    await check("an encrypted room between two Hydrogen sessions (olm + megolm both ways; ciphertext on the wire)", async () => {
        const carol = await register(`hcarol${run}`, { inhibitLogin: true });
        const second = await openHydrogenPage("hydrogen-2");
        const carolLogin = await second.call("login", baseUrl, `hcarol${run}`, password);
        assert.equal(carolLogin.status, "Ready");

        const room = await createRoom(bob, {
            name: `hydrogen e2ee ${run}`,
            preset: "private_chat",
            invite: [hydrogenUser.userId, carolLogin.userId],
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        });
        for (const side of [hydrogen, second]) {
            const invite = await side.call("waitForInvite", room);
            assert.ok(invite.isEncrypted, "the invite says the room is encrypted");
            const joinedRoom = await side.call("acceptInvite", room);
            assert.ok(joinedRoom.isEncrypted, "the joined room is encrypted");
        }
        await eventually("both Hydrogen users joined", async () => {
            const { body } = await api("GET", `/_matrix/client/v3/rooms/${enc(room)}/joined_members`, { token: bob.token });
            return body.joined?.[hydrogenUser.userId] && body.joined?.[carolLogin.userId];
        });
        await hydrogen.call("openTimeline", room);
        await second.call("openTimeline", room);

        const first = await hydrogen.call("sendText", room, "secret from hydrogen");
        const atCarol = await second.call("waitForBody", room, "secret from hydrogen");
        assert.equal(atCarol.id, first.eventId);
        assert.ok(atCarol.encrypted && atCarol.decrypted, `travelled encrypted and decrypted: ${JSON.stringify(atCarol)}`);

        const reply = await second.call("sendText", room, "secret from carol");
        const atHydrogen = await hydrogen.call("waitForBody", room, "secret from carol");
        assert.equal(atHydrogen.id, reply.eventId);
        assert.ok(atHydrogen.encrypted && atHydrogen.decrypted, `travelled encrypted and decrypted: ${JSON.stringify(atHydrogen)}`);

        // What the server holds (and bob, who has no keys, sees) is megolm ciphertext only.
        const { body: history } = await api("GET", `/_matrix/client/v3/rooms/${enc(room)}/messages?dir=b&limit=50`, { token: bob.token });
        for (const id of [first.eventId, reply.eventId]) {
            const event = history.chunk.find((e) => e.event_id === id);
            assert.ok(event, `${id} in /messages`);
            assert.equal(event.type, "m.room.encrypted");
            assert.equal(event.content.algorithm, "m.megolm.v1.aes-sha2");
            assert.ok(!JSON.stringify(event).includes("secret from"), "no plaintext on the server");
        }
    });
} catch (error) {
    say(String(error?.message ?? error));
} finally {
    await browser.close().catch(() => {});
}

const failed = checks.filter(([, ok]) => !ok).length;
say(`hydrogen interop: ${checks.length - failed} checks passed, ${failed} failed`);
if (checks.length !== EXPECTED_CHECKS) say(`(${EXPECTED_CHECKS - checks.length} of ${EXPECTED_CHECKS} checks did not run)`);
process.exit(failed === 0 && checks.length === EXPECTED_CHECKS ? 0 : 1);
