// The page the Hydrogen interop test loads in headless Chromium (built by vite, see
// vite.config.js). It runs the Hydrogen SDK's Client the way Hydrogen Web does (IndexedDB
// storage, olm for E2EE) and exposes a small API on `window.hydrogen` for the Node driver
// (test.mjs) to call through page.evaluate. Every wait here is bounded; results are plain
// JSON so they cross the page boundary.

import { Platform, Client, LoadStatus, createNavigation } from "hydrogen-view-sdk";
import downloadSandboxPath from "hydrogen-view-sdk/download-sandbox.html?url";
import workerPath from "hydrogen-view-sdk/main.js?url";
import olmWasmPath from "@matrix-org/olm/olm.wasm?url";
import olmJsPath from "@matrix-org/olm/olm.js?url";
import olmLegacyJsPath from "@matrix-org/olm/olm_legacy.js?url";

// sw.js is emitted at the root by vite.config.js; Hydrogen cannot load a session without it.
const assetPaths = {
    downloadSandbox: downloadSandboxPath,
    worker: workerPath,
    olm: { wasm: olmWasmPath, legacyBundle: olmLegacyJsPath, wasmBundle: olmJsPath },
    serviceWorker: "sw.js",
};

const DEFAULT_TIMEOUT_MS = 30_000;

// Polls `check` until it returns something other than undefined/null/false.
async function until(what, check, timeoutMs = DEFAULT_TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = await check();
        if (value !== undefined && value !== null && value !== false) return value;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

let platform;
let client;
const timelines = new Map();

function session() {
    if (!client?.session) throw new Error("not logged in");
    return client.session;
}

function room(roomId) {
    const found = session().rooms.get(roomId);
    if (!found) throw new Error(`room ${roomId} is not in session.rooms`);
    return found;
}

function timeline(roomId) {
    const found = timelines.get(roomId);
    if (!found) throw new Error(`no open timeline for ${roomId}`);
    return found;
}

// A timeline entry as plain data: an event (remote or pending) or a fragment boundary (gap).
function describe(entry) {
    if (entry.fragment !== undefined && entry.event === undefined) {
        return { kind: "boundary", start: entry.started, isGap: entry.isGap, edgeReached: !!entry.edgeReached };
    }
    return {
        kind: entry.isPending ? "pending" : "event",
        id: entry.id,
        type: entry.eventType,
        sender: entry.sender,
        body: entry.content?.body,
        stateKey: entry.stateKey,
        encrypted: !!entry.isEncrypted,
        decrypted: !!entry.isDecrypted,
        decryptionError: entry.decryptionError ? String(entry.decryptionError.message ?? entry.decryptionError) : undefined,
    };
}

function entries(roomId) {
    return Array.from(timeline(roomId).entries, describe);
}

window.hydrogen = {
    // queryLogin + startWithLogin(password), then waits for Ready (the first sync done).
    async login(homeserver, username, password) {
        platform = new Platform({ container: document.querySelector("#app"), assetPaths, config: {}, options: { development: false } });
        // The service worker asks the page about the navigation (which session is open).
        platform.setNavigation(createNavigation());
        await platform.init();
        client = new Client(platform);
        const loginOptions = await client.queryLogin(homeserver).result;
        if (!loginOptions.password) throw new Error(`no password login offered: ${JSON.stringify(Object.keys(loginOptions))}`);
        const statuses = [];
        client.loadStatus.subscribe((status) => statuses.push(status));
        client.startWithLogin(loginOptions.password(username, password));
        const handle = client.loadStatus.waitFor((status) =>
            status === LoadStatus.Ready || status === LoadStatus.Error || status === LoadStatus.LoginFailed);
        const timer = setTimeout(() => handle.dispose?.(), DEFAULT_TIMEOUT_MS);
        try {
            await Promise.race([
                handle.promise,
                new Promise((_, reject) => setTimeout(() => reject(new Error(`login did not finish; statuses: ${statuses.join(" > ")}`)), DEFAULT_TIMEOUT_MS)),
            ]);
        } finally {
            clearTimeout(timer);
        }
        if (client.loginFailure) throw new Error(`login failed: ${client.loginFailure} (${client.loadError?.message})`);
        if (client.loadError) throw new Error(`load failed: ${client.loadError.stack ?? client.loadError.message}`);
        return {
            status: client.loadStatus.get(),
            statuses,
            homeserver: loginOptions.homeserver,
            userId: session().userId,
            deviceId: session().deviceId,
            syncStatus: client.sync.status.get(),
            hasOlm: !!session()._olm,
        };
    },

    syncStatus() {
        return client?.sync?.status.get();
    },

    // Waits for the invite in session.invites; answers what Hydrogen made of its stripped state.
    async waitForInvite(roomId) {
        const invite = await until(`the invite to ${roomId} in session.invites`, () => session().invites.get(roomId));
        return { id: invite.id, name: invite.name, inviter: invite.inviter?.userId, isEncrypted: !!invite.isEncrypted, isDirectMessage: !!invite.isDirectMessage };
    },

    // invite.accept(), then waits until the room is in session.rooms as joined and the invite gone.
    async acceptInvite(roomId) {
        const invite = session().invites.get(roomId);
        if (!invite) throw new Error(`no invite for ${roomId}`);
        await invite.accept();
        const joined = await until(`${roomId} joined in session.rooms`, () => {
            const r = session().rooms.get(roomId);
            return r && r.membership === "join" && !session().invites.get(roomId) && r;
        });
        return { id: joined.id, name: joined.name, membership: joined.membership, isEncrypted: !!joined.isEncrypted, inviteGone: !session().invites.get(roomId) };
    },

    roomIds() {
        return { rooms: Array.from(session().rooms.keys()), invites: Array.from(session().invites.keys()) };
    },

    // room.openTimeline(); the entries list is subscribed so it stays live.
    async openTimeline(roomId) {
        const opened = await room(roomId).openTimeline();
        opened.entries.subscribe({ onAdd() {}, onUpdate() {}, onRemove() {}, onMove() {}, onReset() {} });
        timelines.set(roomId, opened);
        return entries(roomId);
    },

    entries,

    // Waits for a remote (not pending) event with this body in the open timeline.
    async waitForBody(roomId, body) {
        return until(`"${body}" in the timeline of ${roomId}`, () =>
            entries(roomId).find((e) => e.kind === "event" && e.body === body && (!e.encrypted || e.decrypted)));
    },

    // room.sendEvent; waits for the send queue to get an event id and for the remote echo.
    async sendText(roomId, body) {
        const pending = await room(roomId).sendEvent("m.room.message", { msgtype: "m.text", body });
        const eventId = await until(`the event id for "${body}"`, () => pending?.remoteId ?? entries(roomId).find((e) => e.kind === "event" && e.body === body)?.id);
        const echo = await until(`the remote echo of "${body}"`, () => entries(roomId).find((e) => e.kind === "event" && e.id === eventId));
        return { eventId, echo };
    },

    // Back-paginates the way Hydrogen's timeline view does when scrolled to the top: a gap at
    // the top is filled with room.fillGap (/messages), otherwise timeline.loadAtTop reads older
    // entries from storage; until the start of the room is reached. Answers how many of each.
    async fillGapsToStart(roomId, amount = 10) {
        const first = () => Array.from(timeline(roomId).entries)[0];
        const isGapEntry = (entry) => !!entry && describe(entry).kind === "boundary" && describe(entry).isGap;
        let fills = 0;
        let loads = 0;
        for (;;) {
            if (fills + loads > 100) throw new Error(`no start of the room after ${fills} fills and ${loads} loads`);
            const top = first();
            if (isGapEntry(top)) {
                await room(roomId).fillGap(top, amount);
                fills += 1;
                continue;
            }
            const reachedEnd = await timeline(roomId).loadAtTop(amount);
            loads += 1;
            if (reachedEnd && !isGapEntry(first())) break;
        }
        return { fills, loads, entries: entries(roomId) };
    },
};

window.hydrogenReady = true;
