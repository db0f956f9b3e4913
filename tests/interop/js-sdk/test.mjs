// Interop test: matrix-js-sdk (the SDK under Element Web) against a running weft.
// Usage: node test.mjs http://127.0.0.1:PORT
//
// Two users register and log in (with refresh tokens), start their clients the way Element
// Web does (sync, Rust crypto), and exercise: the spec versions the SDK keys features on,
// an invite and join, messages both ways, back-pagination, read receipts, typing, an image
// uploaded and fetched through authenticated media, and an encrypted room both ways.

import assert from "node:assert/strict";
import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

const baseUrl = process.argv[2];
if (!baseUrl) {
    console.error("usage: node test.mjs <homeserver base url>");
    process.exit(2);
}
logger.setLevel(process.env.JS_SDK_LOG ?? "error");
// The SDK's Rust crypto turns its tracing on at debug level, and some SDK modules print with
// console.log: quiet unless JS_SDK_LOG asks for it. This test's own lines go to stdout.
if (!process.env.JS_SDK_LOG) {
    for (const level of ["log", "info", "debug", "trace", "warn"]) console[level] = () => {};
    const error = console.error;
    console.error = (...args) => {
        // MatrixRTC's note about state for a room the store has not taken in yet.
        if (!String(args[0]).startsWith("[MatrixRTCSessionManager]")) error(...args);
    };
}
const say = (line) => process.stdout.write(`${line}\n`);

const run = Date.now().toString(36);
const TIMEOUT_MS = 30_000;

// Resolves with the first arguments of `event` on `emitter` for which `pick` returns a value.
function waitFor(emitter, event, what, pick) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            emitter.off(event, listener);
            reject(new Error(`timed out waiting for ${what}`));
        }, TIMEOUT_MS);
        const listener = (...args) => {
            let value;
            try {
                value = pick(...args);
            } catch (error) {
                value = undefined;
            }
            if (value !== undefined && value !== false) {
                clearTimeout(timer);
                emitter.off(event, listener);
                resolve(value);
            }
        };
        emitter.on(event, listener);
    });
}

// Polls `check` (which may be async) until it returns a value, or fails after the timeout.
async function eventually(what, check) {
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
        const value = await check();
        if (value !== undefined && value !== false && value !== null) return value;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

// Registers through user-interactive auth (m.login.dummy), as the SDK's registration does.
async function register(localpart, password) {
    const anonymous = sdk.createClient({ baseUrl });
    try {
        await anonymous.registerRequest({ username: localpart, password, inhibit_login: true });
        assert.fail("registration without auth should start user-interactive auth");
    } catch (error) {
        assert.equal(error.httpStatus, 401, `registration challenge: ${error}`);
        const session = error.data.session;
        assert.ok(session, "the 401 carries a UIA session");
        await anonymous.registerRequest({
            username: localpart,
            password,
            inhibit_login: true,
            auth: { type: "m.login.dummy", session },
        });
    }
}

// Logs in with a password asking for a refresh token, and starts a client with Rust crypto.
async function loggedInClient(localpart, password) {
    const anonymous = sdk.createClient({ baseUrl });
    const login = await anonymous.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: localpart },
        password,
        initial_device_display_name: "js-sdk interop",
        refresh_token: true,
    });
    assert.ok(login.access_token && login.device_id, "login answers a token and a device");
    assert.ok(login.refresh_token, "refresh_token: true gets a refresh token");
    assert.ok(login.expires_in_ms > 0, "a refreshable token says when it expires");

    // The SDK's own refresh call gives a new pair; once the new access token is used, the old
    // refresh token is revoked (the spec's rule).
    const refreshed = await anonymous.refreshToken(login.refresh_token);
    assert.ok(refreshed.access_token && refreshed.access_token !== login.access_token, "refresh gives a new access token");
    assert.ok(refreshed.refresh_token && refreshed.refresh_token !== login.refresh_token, "and a new refresh token");
    await sdk.createClient({ baseUrl, accessToken: refreshed.access_token }).whoami();
    await assert.rejects(anonymous.refreshToken(login.refresh_token), (e) => e.errcode === "M_UNKNOWN_TOKEN", "the old refresh token is revoked");

    const client = sdk.createClient({
        baseUrl,
        userId: login.user_id,
        deviceId: login.device_id,
        accessToken: refreshed.access_token,
        refreshToken: refreshed.refresh_token,
        tokenRefreshFunction: async (refreshToken) => {
            const next = await anonymous.refreshToken(refreshToken);
            return { accessToken: next.access_token, refreshToken: next.refresh_token, expiry: new Date(Date.now() + next.expires_in_ms) };
        },
    });
    const whoami = await client.whoami();
    assert.equal(whoami.user_id, login.user_id);
    await client.initRustCrypto({ useIndexedDB: false });
    return client;
}

async function startAndWaitForSync(client) {
    const prepared = waitFor(client, sdk.ClientEvent.Sync, "the first sync", (state) => state === "PREPARED");
    await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: true });
    await prepared;
}

function timelineEventFor(client, roomId, what, pick) {
    return waitFor(client, sdk.RoomEvent.Timeline, what, (event, room) => room?.roomId === roomId && pick(event));
}

const EXPECTED_CHECKS = 9;
const checks = [];
async function check(name, body) {
    process.stdout.write(`- ${name} ... `);
    try {
        await body();
        say("ok");
        checks.push([name, true]);
    } catch (error) {
        say("FAILED");
        say(error?.stack ?? error);
        checks.push([name, false]);
        throw error;
    }
}

const clients = [];
try {
    const password = "interop-password-1";
    let alice, bob, roomId, firstEventId;

    await check("/versions: the spec versions Element Web keys features on", async () => {
        const probe = sdk.createClient({ baseUrl });
        for (const version of ["v1.1", "v1.5", "v1.7", "v1.11", "v1.12"]) {
            assert.ok(await probe.isVersionSupported(version), `${version} advertised`);
        }
    });

    await check("register (UIA dummy) and log in with refresh tokens", async () => {
        await register(`jsalice${run}`, password);
        await register(`jsbob${run}`, password);
        alice = await loggedInClient(`jsalice${run}`, password);
        bob = await loggedInClient(`jsbob${run}`, password);
        clients.push(alice, bob);
        await startAndWaitForSync(alice);
        await startAndWaitForSync(bob);
    });

    await check("invite and join: the room reaches the invitee's client", async () => {
        const invited = waitFor(bob, sdk.RoomEvent.MyMembership, "bob's invite", (room, membership) => membership === "invite" && room.roomId);
        ({ room_id: roomId } = await alice.createRoom({ name: `js-sdk ${run}`, invite: [bob.getUserId()], preset: "private_chat" }));
        assert.equal(await invited, roomId);
        const inviteRoom = await eventually("the invited room in bob's store", () => bob.getRoom(roomId));
        assert.equal(inviteRoom.name, `js-sdk ${run}`, "the invite's stripped state names the room");
        await bob.joinRoom(roomId);
        await eventually("alice to see bob joined", () => alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join");
    });

    await check("messages both ways through /sync", async () => {
        const atBob = timelineEventFor(bob, roomId, "alice's message at bob", (e) => e.getContent().body === "hello from js-sdk" && e);
        const sent = await alice.sendTextMessage(roomId, "hello from js-sdk");
        firstEventId = sent.event_id;
        const received = await atBob;
        assert.equal(received.getId(), firstEventId);
        assert.equal(received.getSender(), alice.getUserId());

        const atAlice = timelineEventFor(alice, roomId, "bob's reply at alice", (e) => e.getContent().body === "hello back" && e);
        await bob.sendTextMessage(roomId, "hello back");
        assert.equal((await atAlice).getSender(), bob.getUserId());
    });

    await check("back-pagination (/messages) reaches the room's creation", async () => {
        for (let i = 0; i < 25; i++) await alice.sendTextMessage(roomId, `filler ${i}`);
        await eventually("the fillers at bob", () =>
            bob.getRoom(roomId).getLiveTimeline().getEvents().some((e) => e.getContent().body === "filler 24"));
        // A fresh client with a short initial timeline has to paginate back to the start.
        const reader = sdk.createClient({ baseUrl, userId: bob.getUserId(), deviceId: bob.getDeviceId(), accessToken: bob.getAccessToken() });
        clients.push(reader);
        const prepared = waitFor(reader, sdk.ClientEvent.Sync, "the reader's first sync", (state) => state === "PREPARED");
        await reader.startClient({ initialSyncLimit: 5 });
        await prepared;
        const room = reader.getRoom(roomId);
        const has = (type) => room.getLiveTimeline().getEvents().some((e) => e.getType() === type);
        assert.ok(!has("m.room.create"), "a 5-event initial timeline does not reach the creation");
        for (let i = 0; i < 20 && !has("m.room.create"); i++) await reader.scrollback(room, 10);
        assert.ok(has("m.room.create"), "scrollback reached m.room.create");
        const bodies = room.getLiveTimeline().getEvents().map((e) => e.getContent().body).filter(Boolean);
        assert.deepEqual(bodies.filter((b) => b.startsWith("filler")), Array.from({ length: 25 }, (_, i) => `filler ${i}`), "history in order, nothing missing");
        reader.stopClient();
    });

    await check("read receipts arrive", async () => {
        const room = alice.getRoom(roomId);
        const last = bob.getRoom(roomId).getLiveTimeline().getEvents().at(-1);
        const receipt = waitFor(alice, sdk.RoomEvent.Receipt, "bob's receipt", () =>
            room.getEventReadUpTo(bob.getUserId()) === last.getId() || undefined);
        await bob.sendReadReceipt(last);
        await receipt;
    });

    await check("typing notifications arrive", async () => {
        const typing = waitFor(bob, sdk.RoomMemberEvent.Typing, "alice typing", (_event, member) =>
            member.userId === alice.getUserId() && member.roomId === roomId && member.typing);
        await alice.sendTyping(roomId, true, 10_000);
        await typing;
        const stopped = waitFor(bob, sdk.RoomMemberEvent.Typing, "alice stopped typing", (_event, member) =>
            member.userId === alice.getUserId() && member.roomId === roomId && !member.typing);
        await alice.sendTyping(roomId, false, 0);
        await stopped;
    });

    await check("an image through authenticated media (v1.11)", async () => {
        // A 1x1 PNG.
        const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "base64");
        const upload = await alice.uploadContent(png, { name: "pixel.png", type: "image/png" });
        assert.match(upload.content_uri, /^mxc:\/\//);
        const atBob = timelineEventFor(bob, roomId, "the image event", (e) => e.getContent().msgtype === "m.image" && e);
        await alice.sendMessage(roomId, { msgtype: "m.image", body: "pixel.png", url: upload.content_uri, info: { mimetype: "image/png", size: png.length, w: 1, h: 1 } });
        const event = await atBob;

        // What Element Web does for servers with v1.11: authenticated URLs, the token in a header.
        const url = bob.mxcUrlToHttp(event.getContent().url, undefined, undefined, undefined, false, true, true);
        assert.match(url, /\/_matrix\/client\/v1\/media\/download\//);
        const download = await fetch(url, { headers: { Authorization: `Bearer ${bob.getAccessToken()}` } });
        assert.equal(download.status, 200);
        assert.deepEqual(Buffer.from(await download.arrayBuffer()), png, "the bytes come back unchanged");
        const anonymous = await fetch(url);
        assert.equal(anonymous.status, 401, "authenticated media needs a token");

        const thumbUrl = bob.mxcUrlToHttp(event.getContent().url, 32, 32, "scale", false, true, true);
        assert.match(thumbUrl, /\/_matrix\/client\/v1\/media\/thumbnail\//);
        const thumb = await fetch(thumbUrl, { headers: { Authorization: `Bearer ${bob.getAccessToken()}` } });
        assert.equal(thumb.status, 200);
        assert.match(thumb.headers.get("content-type"), /^image\//);
    });

    await check("an encrypted room both ways (Rust crypto: keys uploaded, claimed, decrypted)", async () => {
        const invited = waitFor(bob, sdk.RoomEvent.MyMembership, "bob's invite to the encrypted room", (room, membership) => membership === "invite" && room.roomId);
        const { room_id: secretRoom } = await alice.createRoom({
            name: `js-sdk e2ee ${run}`,
            invite: [bob.getUserId()],
            preset: "private_chat",
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        });
        assert.equal(await invited, secretRoom);
        await bob.joinRoom(secretRoom);
        await eventually("alice to see bob in the encrypted room", () => alice.getRoom(secretRoom)?.getMember(bob.getUserId())?.membership === "join");
        assert.ok(await alice.getCrypto().isEncryptionEnabledInRoom(secretRoom));

        const decryptedAt = (client, body) =>
            waitFor(client, sdk.MatrixEventEvent.Decrypted, `"${body}" decrypted`, (event) =>
                event.getRoomId() === secretRoom && event.getContent().body === body && event);

        const atBob = decryptedAt(bob, "secret from alice");
        await alice.sendTextMessage(secretRoom, "secret from alice");
        const received = await atBob;
        assert.equal(received.getWireType(), "m.room.encrypted", "it travelled encrypted");
        assert.equal(received.getSender(), alice.getUserId());

        const atAlice = decryptedAt(alice, "secret from bob");
        await bob.sendTextMessage(secretRoom, "secret from bob");
        assert.equal((await atAlice).getWireType(), "m.room.encrypted");
    });
} catch (error) {
    // Already reported by `check`.
} finally {
    for (const client of clients) client.stopClient();
}

const failed = checks.filter(([, ok]) => !ok).length;
say(`js-sdk interop: ${checks.length - failed} checks passed, ${failed} failed`);
// Every check ran (the first failure stops the rest) and passed.
process.exit(failed === 0 && checks.length === EXPECTED_CHECKS ? 0 : 1);
