"""Interop test: a bridge built on mautrix-python (the framework most bridges use) against
weft. The bridge registers its bot and a puppet, receives a user's room messages as
transactions, answers as the puppet, and creates a user when weft asks it about one.

usage: mautrix_bridge.py HOMESERVER_URL APPSERVICE_PORT AS_TOKEN HS_TOKEN
"""

import asyncio
import json
import sys
import tempfile
import urllib.parse

import aiohttp
from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from mautrix.types import EventType, MessageEvent, Membership, StateEvent, TextMessageEventContent, MessageType

HOMESERVER, PORT, AS_TOKEN, HS_TOKEN = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
DOMAIN = "localhost"
PUPPET = f"@gossip_bob:{DOMAIN}"


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


async def client_request(session, method, path, token=None, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, HOMESERVER + path, json=body, headers=headers) as response:
        return response.status, await response.json()


async def main():
    received = []
    invited = asyncio.Event()
    got_message = asyncio.Event()
    queried = []

    async def query_user(user_id):
        # The remote network knows "gossip_known_*" users: make them on weft.
        queried.append(user_id)
        if not user_id.startswith("@gossip_known_"):
            return None
        await appservice.intent.user(user_id).ensure_registered()
        return {"registered": True}  # mautrix answers 404 for an empty (falsy) answer

    appservice = AppService(
        server=HOMESERVER,
        domain=DOMAIN,
        as_token=AS_TOKEN,
        hs_token=HS_TOKEN,
        bot_localpart="gossipbot",
        id="gossip",
        query_user=query_user,
        state_store=FileASStateStore(path=tempfile.mktemp(suffix='.json'), binary=False),
    )

    @appservice.matrix_event_handler
    async def on_event(event):
        received.append(event)
        if isinstance(event, StateEvent) and event.type == EventType.ROOM_MEMBER:
            if event.state_key == PUPPET and event.content.membership == Membership.INVITE:
                invited.set()
        elif isinstance(event, MessageEvent) and event.sender != PUPPET and event.content.body == "hello bridge":
            got_message.set()

    await appservice.start(host="127.0.0.1", port=PORT)
    try:
        async with aiohttp.ClientSession() as session:
            # The service pings itself through weft (weft -> POST /_matrix/app/v1/ping, which
            # mautrix answers): an error status would raise here. (mautrix reads a 0 ms
            # round trip as -1, so the duration is checked on the raw answer.)
            await appservice.ping_self("interop-ping")
            status, pong = await client_request(session, "POST", "/_matrix/client/v1/appservice/gossip/ping", AS_TOKEN, {})
            duration = pong.get("duration_ms")
            if status != 200 or not isinstance(duration, int) or duration < 0:
                fail(f"ping: {status} {pong}")

            await appservice.intent.ensure_registered()
            puppet = appservice.intent.user(PUPPET)
            await puppet.ensure_registered()
            await puppet.set_displayname("Bob (Gossip)")
            whoami = await puppet.whoami()
            if whoami.user_id != PUPPET:
                fail(f"puppet whoami says {whoami.user_id}")

            status, reg = await client_request(
                session, "POST", "/_matrix/client/v3/register",
                body={"username": "alice", "password": "interop-pass", "auth": {"type": "m.login.dummy"}},
            )
            if status != 200:
                fail(f"alice's registration: {status} {reg}")
            alice = reg["access_token"]
            # An ordinary user cannot take a name in the bridge's exclusive namespace.
            status, body = await client_request(
                session, "POST", "/_matrix/client/v3/register",
                body={"username": "gossip_mallory", "password": "x" * 12, "auth": {"type": "m.login.dummy"}},
            )
            if status != 400 or body.get("errcode") != "M_EXCLUSIVE":
                fail(f"registration inside the exclusive namespace: {status} {body}")

            status, room = await client_request(session, "POST", "/_matrix/client/v3/createRoom", alice, {"name": "Bridged"})
            room_id = room["room_id"]
            await client_request(session, "POST", f"/_matrix/client/v3/rooms/{room_id}/invite", alice, {"user_id": PUPPET})
            await asyncio.wait_for(invited.wait(), 20)
            await puppet.join_room(room_id)

            await client_request(
                session, "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1", alice,
                {"msgtype": "m.text", "body": "hello bridge"},
            )
            await asyncio.wait_for(got_message.wait(), 20)

            # The puppet answers; alice sees it from the puppet, with its bridged name.
            await puppet.send_message(room_id, TextMessageEventContent(msgtype=MessageType.TEXT, body="hello from gossip"))
            status, messages = await client_request(session, "GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=10", alice)
            answer = [e for e in messages["chunk"] if e["type"] == "m.room.message" and e["sender"] == PUPPET]
            if not answer or answer[0]["content"]["body"] != "hello from gossip":
                fail(f"alice does not see the puppet's answer: {json.dumps(messages)[:500]}")
            status, member = await client_request(
                session, "GET", f"/_matrix/client/v3/rooms/{room_id}/state/m.room.member/{urllib.parse.quote(PUPPET)}", alice,
            )
            if member.get("displayname") != "Bob (Gossip)":
                fail(f"puppet's member event: {member}")

            # weft asks the bridge about a user it does not know; the bridge creates it.
            carol = f"@gossip_known_carol:{DOMAIN}"
            status, profile = await client_request(session, "GET", f"/_matrix/client/v3/profile/{urllib.parse.quote(carol)}", alice)
            if status != 200 or carol not in queried:
                fail(f"user query: {status} {profile}, queried {queried}")
            status, _ = await client_request(session, "GET", f"/_matrix/client/v3/profile/{urllib.parse.quote('@gossip_nobody:' + DOMAIN)}", alice)
            if status != 404:
                fail(f"an unknown user the bridge does not know: {status}")

            kinds = sorted({str(e.type) for e in received})
            print(f"OK: bridge got {len(received)} events ({', '.join(kinds)}), ping {duration} ms, queried {queried}")
    finally:
        await appservice.stop()


asyncio.run(main())
