"""Interop: after `weft migrate-db`, matrix-nio finds on PostgreSQL what nio_client.py left
on SQLite: both accounts log in with their passwords, the room is there with its name,
history reads back in order, and new messages go on from there.

    python nio_after_migration.py http://127.0.0.1:PORT
"""

import asyncio
import sys

from nio import AsyncClient, JoinedRoomsResponse, LoginResponse, RoomGetStateEventResponse, RoomMessagesResponse, RoomMessageText, RoomSendResponse, SyncResponse


def check(condition, what):
    if not condition:
        print(f"FAIL: {what}")
        sys.exit(1)
    print(f"ok: {what}")


async def main(homeserver: str) -> None:
    alice = AsyncClient(homeserver, "@alice:localhost")
    bob = AsyncClient(homeserver, "@bob:localhost")
    try:
        check(isinstance(await alice.login("alice-password"), LoginResponse), "alice logs in with her password")
        check(isinstance(await bob.login("bob-password"), LoginResponse), "bob logs in with his password")
        rooms = await bob.joined_rooms()
        check(isinstance(rooms, JoinedRoomsResponse) and len(rooms.rooms) == 1, f"bob's room is there ({rooms})")
        room_id = rooms.rooms[0]
        name = await bob.room_get_state_event(room_id, "m.room.name")
        check(isinstance(name, RoomGetStateEventResponse) and name.content.get("name") == "nio interop", f"room name ({name})")
        history = await bob.room_messages(room_id, start=None, limit=20)
        texts = [e.body for e in history.chunk if isinstance(e, RoomMessageText)]
        check(texts == ["hi alice", "hello 4", "hello 3", "hello 2", "hello 1", "hello 0"], f"history in order: {texts}")
        synced = await bob.sync(timeout=0)
        check(isinstance(synced, SyncResponse), "bob syncs")
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "after the move"})
        check(isinstance(sent, RoomSendResponse), "alice sends on PostgreSQL")
        update = await bob.sync(timeout=10000, since=synced.next_batch)
        new = [e.body for e in update.rooms.join[room_id].timeline.events if isinstance(e, RoomMessageText)] if room_id in update.rooms.join else []
        check(new == ["after the move"], f"bob's sync brings exactly the new message: {new}")
    finally:
        await alice.close()
        await bob.close()


asyncio.run(main(sys.argv[1]))
