"""Interop: weft and Synapse federating on loopback.

A weft user joins a room made on Synapse and a Synapse user joins a room made on weft;
messages go both ways and are seen through /sync on each side; a kick on Synapse reaches
weft; history from before the join is backfilled; invites both ways; media uploaded on
either server is downloaded (and thumbnailed) through the other; each server lists the
other's public rooms; weft walks a space on Synapse. Uses only the standard library.
"""

import argparse
import hashlib
import hmac
import json
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


def check(condition, what):
    if not condition:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what.split(' (')[0]}", flush=True)


def api(base, method, path, token=None, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=INSECURE, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def raw(base, method, path, token=None, data=None, content_type=None, timeout=30):
    """A request whose body and answer are bytes: (status, headers, body)."""
    request = urllib.request.Request(base + path, data=data, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=INSECURE, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def png(width, height):
    """A small valid PNG (grey), made with zlib: no imaging library needed."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([(x * 7 + y * 3) % 256 for x in range(width)]) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data):
    import struct
    return struct.unpack(">II", data[16:24]) if data[:8] == b"\x89PNG\r\n\x1a\n" else None


def upload(base, token, data, content_type, filename):
    status, _, body = raw(base, "POST", f"/_matrix/media/v3/upload?filename={q(filename)}", token, data, content_type)
    check(status == 200, f"uploaded {filename} ({status} {body[:200]})")
    return json.loads(body)["content_uri"][len("mxc://"):]


def q(value):
    return urllib.parse.quote(value, safe="")


def wait_until_up(base, what):
    for _ in range(300):
        try:
            status, _ = api(base, "GET", "/_matrix/client/versions", timeout=2)
            if status == 200:
                return
        except Exception:
            pass
        time.sleep(0.2)
    check(False, f"{what} came up")


def register_synapse(base, name, secret):
    _, nonce = api(base, "GET", "/_synapse/admin/v1/register")
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(f"{nonce['nonce']}\0{name}\0{name}-pw\0notadmin".encode())
    status, body = api(base, "POST", "/_synapse/admin/v1/register",
                       body={"nonce": nonce["nonce"], "username": name, "password": f"{name}-pw", "admin": False, "mac": mac.hexdigest()})
    check(status == 200, f"{name} registered on Synapse ({status} {body})")
    return body["user_id"], body["access_token"]


def register_weft(base, name):
    status, body = api(base, "POST", "/_matrix/client/v3/register",
                       body={"username": name, "password": f"{name}-pw", "auth": {"type": "m.login.dummy"}})
    check(status == 200, f"{name} registered on weft ({status} {body})")
    return body["user_id"], body["access_token"]


class Syncer:
    """Long-polls /sync for one user, remembering the position."""

    def __init__(self, base, token):
        self.base, self.token, self.since = base, token, None

    def wait(self, what, predicate, seconds=90):
        deadline = time.time() + seconds
        while time.time() < deadline:
            path = "/_matrix/client/v3/sync?timeout=5000"
            if self.since:
                path += f"&since={q(self.since)}"
            status, body = api(self.base, "GET", path, self.token, timeout=30)
            if status != 200:
                time.sleep(0.5)
                continue
            self.since = body.get("next_batch", self.since)
            if predicate(body):
                return body
        check(False, f"{what} (not seen within {seconds}s)")


def timeline_has(room_id, body_text):
    def predicate(sync):
        events = sync.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
        return any(e.get("content", {}).get("body") == body_text for e in events)
    return predicate


def send_text(base, token, room_id, text):
    txn = f"t{time.time_ns()}"
    status, body = api(base, "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{txn}", token,
                       {"msgtype": "m.text", "body": text})
    check(status == 200, f"sent {text!r} ({status} {body})")
    return body["event_id"]


def join(base, token, room, via=None, attempts=10):
    path = f"/_matrix/client/v3/join/{q(room)}"
    if via:
        path += f"?via={q(via)}"
    status, body = None, None
    for _ in range(attempts):
        status, body = api(base, "POST", path, token, {})
        if status == 200:
            return body
        time.sleep(1)
    check(False, f"join {room} ({status} {body})")


def members(base, token, room_id):
    status, body = api(base, "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/members", token)
    if status != 200:
        return {}
    return {e["state_key"]: e["content"].get("membership") for e in body.get("chunk", [])}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--synapse")
    parser.add_argument("--synapse-name")
    parser.add_argument("--weft")
    parser.add_argument("--weft-name")
    parser.add_argument("--secret")
    args = parser.parse_args()
    wait_until_up(args.synapse, "Synapse")
    wait_until_up(args.weft, "weft")

    sam, sam_token = register_synapse(args.synapse, "sam", args.secret)
    wendy, wendy_token = register_weft(args.weft, "wendy")
    sam_sync = Syncer(args.synapse, sam_token)
    wendy_sync = Syncer(args.weft, wendy_token)

    # 1. A weft user joins a room made on Synapse.
    status, created = api(args.synapse, "POST", "/_matrix/client/v3/createRoom", sam_token,
                          {"preset": "public_chat", "room_alias_name": "synroom", "name": "On Synapse"})
    check(status == 200, f"sam creates a room on Synapse ({status} {created})")
    syn_room = created["room_id"]
    send_text(args.synapse, sam_token, syn_room, "said before wendy came")
    joined = join(args.weft, wendy_token, f"#synroom:{args.synapse_name}")
    check(joined.get("room_id") == syn_room, f"wendy (weft) joins the Synapse room by alias ({joined})")
    status, name = api(args.weft, "GET", f"/_matrix/client/v3/rooms/{q(syn_room)}/state/m.room.name", wendy_token)
    check(status == 200 and name.get("name") == "On Synapse", f"weft has the room's state ({status} {name})")
    sam_sync.wait("Synapse sees wendy's join", lambda s: any(
        e.get("type") == "m.room.member" and e.get("state_key") == wendy
        for e in s.get("rooms", {}).get("join", {}).get(syn_room, {}).get("timeline", {}).get("events", [])))
    status, history = api(args.weft, "GET", f"/_matrix/client/v3/rooms/{q(syn_room)}/messages?dir=b&limit=50", wendy_token)
    bodies = [e.get("content", {}).get("body") for e in history.get("chunk", [])]
    check(status == 200 and "said before wendy came" in bodies, f"weft backfills history from before the join ({status} {bodies})")
    send_text(args.synapse, sam_token, syn_room, "hello from synapse")
    wendy_sync.wait("weft's /sync shows sam's message", timeline_has(syn_room, "hello from synapse"))
    send_text(args.weft, wendy_token, syn_room, "hello from weft")
    sam_sync.wait("Synapse's /sync shows wendy's message", timeline_has(syn_room, "hello from weft"))

    # 2. A Synapse user joins a room made on weft.
    status, created = api(args.weft, "POST", "/_matrix/client/v3/createRoom", wendy_token,
                          {"preset": "public_chat", "room_alias_name": "weftroom", "name": "On weft"})
    check(status == 200, f"wendy creates a room on weft ({status} {created})")
    weft_room = created["room_id"]
    joined = join(args.synapse, sam_token, f"#weftroom:{args.weft_name}")
    check(joined.get("room_id") == weft_room, f"sam (Synapse) joins the weft room by alias ({joined})")
    send_text(args.weft, wendy_token, weft_room, "welcome to weft")
    sam_sync.wait("Synapse's /sync shows the weft room's message", timeline_has(weft_room, "welcome to weft"), seconds=120)
    send_text(args.synapse, sam_token, weft_room, "thanks from synapse")
    status, history = api(args.synapse, "GET", f"/_matrix/client/v3/rooms/{q(weft_room)}/messages?dir=b&limit=50", sam_token)
    types = [e.get("type") for e in history.get("chunk", [])]
    check(status == 200 and "m.room.create" in types, f"Synapse backfills the weft room's history ({status} {types})")
    wendy_sync.wait("weft's /sync shows sam's reply", timeline_has(weft_room, "thanks from synapse"))

    # 3. A kick on Synapse reaches weft.
    status, body = api(args.synapse, "POST", f"/_matrix/client/v3/rooms/{q(syn_room)}/kick", sam_token, {"user_id": wendy, "reason": "bye"})
    check(status == 200, f"sam kicks wendy on Synapse ({status} {body})")
    deadline = time.time() + 60
    while time.time() < deadline and members(args.weft, wendy_token, syn_room).get(wendy) != "leave":
        time.sleep(0.5)
    check(members(args.weft, wendy_token, syn_room).get(wendy) == "leave", "weft sees the kick")
    # 4. Invites both ways, accepted by joining.
    status, created = api(args.synapse, "POST", "/_matrix/client/v3/createRoom", sam_token, {"preset": "private_chat", "name": "Private on Synapse"})
    check(status == 200, f"sam creates a private room ({status} {created})")
    private_syn = created["room_id"]
    status, body = api(args.synapse, "POST", f"/_matrix/client/v3/rooms/{q(private_syn)}/invite", sam_token, {"user_id": wendy})
    check(status == 200, f"sam invites wendy ({status} {body})")
    wendy_sync.wait("weft shows wendy the invite", lambda s: private_syn in s.get("rooms", {}).get("invite", {}))
    join(args.weft, wendy_token, private_syn)
    send_text(args.weft, wendy_token, private_syn, "thanks for the invite")
    sam_sync.wait("Synapse sees wendy's message in the private room", timeline_has(private_syn, "thanks for the invite"))

    status, created = api(args.weft, "POST", "/_matrix/client/v3/createRoom", wendy_token, {"preset": "private_chat", "name": "Private on weft"})
    check(status == 200, f"wendy creates a private room ({status} {created})")
    private_weft = created["room_id"]
    status, body = api(args.weft, "POST", f"/_matrix/client/v3/rooms/{q(private_weft)}/invite", wendy_token, {"user_id": sam})
    check(status == 200, f"wendy invites sam on Synapse ({status} {body})")
    sam_sync.wait("Synapse shows sam the invite", lambda s: private_weft in s.get("rooms", {}).get("invite", {}))
    join(args.synapse, sam_token, private_weft)
    send_text(args.synapse, sam_token, private_weft, "glad to be here")
    wendy_sync.wait("weft sees sam's message in its private room", timeline_has(private_weft, "glad to be here"))

    # 5. Media both ways: weft fetches Synapse's, Synapse fetches weft's (authenticated media).
    picture = png(400, 300)
    syn_media = upload(args.synapse, sam_token, picture, "image/png", "from-synapse.png")
    status, headers, body = raw(args.weft, "GET", f"/_matrix/client/v1/media/download/{syn_media}", wendy_token)
    check(status == 200 and body == picture, f"weft serves Synapse's media, bytes intact ({status}, {len(body)} bytes)")
    check("from-synapse.png" in (headers.get("Content-Disposition") or ""), f"file name kept ({headers.get('Content-Disposition')})")
    status, _, body = raw(args.weft, "GET", f"/_matrix/client/v1/media/thumbnail/{syn_media}?width=96&height=96&method=crop", wendy_token)
    check(status == 200 and png_size(body) == (96, 96), f"weft serves a 96x96 thumbnail of Synapse's media ({status} {png_size(body)})")
    weft_media = upload(args.weft, wendy_token, picture, "image/png", "from-weft.png")
    status, headers, body = raw(args.synapse, "GET", f"/_matrix/client/v1/media/download/{weft_media}", sam_token)
    check(status == 200 and body == picture, f"Synapse serves weft's media, bytes intact ({status}, {len(body)} bytes)")
    status, _, body = raw(args.synapse, "GET", f"/_matrix/client/v1/media/thumbnail/{weft_media}?width=32&height=32&method=crop", sam_token)
    check(status == 200 and len(body) > 0, f"Synapse serves a thumbnail of weft's media ({status})")

    # 6. Public room directories of each other, and a space on Synapse walked from weft.
    for base, token, room in [(args.synapse, sam_token, syn_room), (args.weft, wendy_token, weft_room)]:
        status, body = api(base, "PUT", f"/_matrix/client/v3/directory/list/room/{q(room)}", token, {"visibility": "public"})
        check(status == 200, f"room published ({status} {body})")
    status, listed = api(args.weft, "GET", f"/_matrix/client/v3/publicRooms?server={q(args.synapse_name)}", wendy_token)
    check(status == 200 and syn_room in [r["room_id"] for r in listed.get("chunk", [])], f"weft lists Synapse's public rooms ({status} {listed})")
    status, listed = api(args.synapse, "POST", f"/_matrix/client/v3/publicRooms?server={q(args.weft_name)}", sam_token,
                         {"filter": {"generic_search_term": "On weft"}})
    check(status == 200 and [r["room_id"] for r in listed.get("chunk", [])] == [weft_room], f"Synapse searches weft's public rooms ({status} {listed})")
    status, space = api(args.synapse, "POST", "/_matrix/client/v3/createRoom", sam_token,
                        {"preset": "public_chat", "name": "Synapse space", "creation_content": {"type": "m.space"}})
    check(status == 200, f"sam creates a space ({status} {space})")
    space_id = space["room_id"]
    status, body = api(args.synapse, "PUT", f"/_matrix/client/v3/rooms/{q(space_id)}/state/m.space.child/{q(syn_room)}", sam_token,
                       {"via": [args.synapse_name]})
    check(status == 200, f"sam adds the room to the space ({status} {body})")
    # Room ids of version 12 name no server: wendy joins the space to know where it lives. The
    # child room (wendy was kicked from it) is summarised by Synapse's federation /hierarchy.
    join(args.weft, wendy_token, space_id, via=args.synapse_name)
    status, tree = api(args.weft, "GET", f"/_matrix/client/v1/rooms/{q(space_id)}/hierarchy", wendy_token)
    ids = [r["room_id"] for r in tree.get("rooms", [])]
    check(status == 200 and ids == [space_id, syn_room], f"weft walks the Synapse space over federation ({status} {tree})")
    print("all interop checks passed", flush=True)


if __name__ == "__main__":
    main()
