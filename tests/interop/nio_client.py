"""Interop: matrix-nio, a real third-party client library, against a running weft.

Registers two users, logs in, creates a room, invites and joins the second user, sends
messages both ways and reads the history back. Exits non-zero on any mismatch.
"""

import asyncio
import sys

from nio import (
    AsyncClient,
    PresenceGetResponse,
    PresenceSetResponse,
    ReceiptEvent,
    RoomReadMarkersResponse,
    RoomTypingResponse,
    SyncResponse,
    ToDeviceMessage,
    ToDeviceResponse,
    TypingNoticeEvent,
    UnknownToDeviceEvent,
    JoinedMembersResponse,
    JoinResponse,
    LoginResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomInviteResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    WhoamiResponse,
)


def check(condition, what):
    """`what` may end in " (details)": shown in full on failure only."""
    if not condition:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what.split(' (')[0]}", flush=True)


async def main(homeserver: str) -> None:
    alice = AsyncClient(homeserver, "alice")
    bob = AsyncClient(homeserver, "bob")
    try:
        reg = await alice.register("alice", "alice-password", device_name="nio alice")
        check(isinstance(reg, RegisterResponse), f"alice registers ({reg})")
        reg = await bob.register("bob", "bob-password")
        check(isinstance(reg, RegisterResponse), f"bob registers ({reg})")

        # A fresh password login, as a client on a new device does.
        alice_phone = AsyncClient(homeserver, alice.user_id)
        login = await alice_phone.login("alice-password", device_name="alice's phone")
        check(isinstance(login, LoginResponse), f"alice logs in ({login})")
        who = await alice_phone.whoami()
        check(isinstance(who, WhoamiResponse) and who.user_id == alice.user_id, "whoami")

        created = await alice_phone.room_create(name="nio interop", topic="testing")
        check(isinstance(created, RoomCreateResponse), f"room created ({created})")
        room_id = created.room_id

        invite = await alice_phone.room_invite(room_id, bob.user_id)
        check(isinstance(invite, RoomInviteResponse), f"bob invited ({invite})")
        joined = await bob.join(room_id)
        check(isinstance(joined, JoinResponse) and joined.room_id == room_id, f"bob joins ({joined})")

        members = await alice_phone.joined_members(room_id)
        check(
            isinstance(members, JoinedMembersResponse)
            and sorted(m.user_id for m in members.members) == sorted([alice.user_id, bob.user_id]),
            f"both joined ({members})",
        )

        for i in range(5):
            sent = await alice_phone.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"hello {i}"})
            check(isinstance(sent, RoomSendResponse), f"alice sends message {i}")
        sent = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi alice"})
        check(isinstance(sent, RoomSendResponse), "bob replies")

        name = await bob.room_get_state_event(room_id, "m.room.name")
        check(isinstance(name, RoomGetStateEventResponse) and name.content.get("name") == "nio interop", f"room name ({name})")

        history = await bob.room_messages(room_id, start=None, limit=20)
        check(isinstance(history, RoomMessagesResponse), f"bob reads history ({history})")
        texts = [e.body for e in history.chunk if isinstance(e, RoomMessageText)]
        check(texts == ["hi alice", "hello 4", "hello 3", "hello 2", "hello 1", "hello 0"], f"history in order: {texts}")

        # Page back in steps of 2 using the returned tokens.
        seen = []
        token = None
        while True:
            page = await alice_phone.room_messages(room_id, start=token, limit=2)
            check(isinstance(page, RoomMessagesResponse), "paginated page")
            seen += [e.body for e in page.chunk if isinstance(e, RoomMessageText)]
            if not page.end or not page.chunk:
                break
            token = page.end
        check(seen == texts, f"paginated history matches: {seen}")

        # /sync, parsed (and schema-validated) by nio.
        synced = await bob.sync(timeout=0, full_state=True)
        check(isinstance(synced, SyncResponse), f"bob syncs ({synced})")
        joined = synced.rooms.join.get(room_id)
        check(joined is not None, "the room is in bob's joined rooms")
        sync_texts = [e.body for e in joined.timeline.events if isinstance(e, RoomMessageText)]
        check(sync_texts[-1:] == ["hi alice"], f"sync timeline ends with the newest message: {sync_texts}")
        since = synced.next_batch

        typing = await alice_phone.room_typing(room_id, True, 10000)
        check(isinstance(typing, RoomTypingResponse), f"alice types ({typing})")
        last_event = history.chunk[0].event_id
        markers = await alice_phone.room_read_markers(room_id, last_event, last_event)
        check(isinstance(markers, RoomReadMarkersResponse), f"alice sets read markers ({markers})")
        update = await bob.sync(timeout=10000, since=since)
        check(isinstance(update, SyncResponse), f"bob's incremental sync ({update})")
        ephemeral = update.rooms.join[room_id].ephemeral
        typers = [e.users for e in ephemeral if isinstance(e, TypingNoticeEvent)]
        check(typers == [[alice.user_id]], f"bob sees alice typing: {typers}")
        receipts = [r for e in ephemeral if isinstance(e, ReceiptEvent) for r in e.receipts]
        check(any(r.user_id == alice.user_id and r.event_id == last_event for r in receipts), f"bob sees alice's receipt: {receipts}")

        presence = await alice_phone.set_presence("unavailable", "away for lunch")
        check(isinstance(presence, PresenceSetResponse), f"alice sets presence ({presence})")
        seen_presence = await bob.get_presence(alice.user_id)
        check(
            isinstance(seen_presence, PresenceGetResponse) and seen_presence.presence == "unavailable"
            and seen_presence.status_msg == "away for lunch",
            f"bob reads alice's presence ({seen_presence})",
        )

        sent = await alice_phone.to_device(ToDeviceMessage("org.example.ping", bob.user_id, bob.device_id, {"n": 1}))
        check(isinstance(sent, ToDeviceResponse), f"alice sends to bob's device ({sent})")
        delivered = await bob.sync(timeout=10000, since=update.next_batch)
        pings = [e for e in delivered.to_device_events if isinstance(e, UnknownToDeviceEvent) and e.type == "org.example.ping"]
        check(len(pings) == 1 and pings[0].sender == alice.user_id, f"bob's device receives it: {delivered.to_device_events}")
        await alice_phone.close()
    finally:
        await alice.close()
        await bob.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
