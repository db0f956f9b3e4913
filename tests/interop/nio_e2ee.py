"""Interop: end-to-end encryption with matrix-nio (vodozemac).

Two users, on one server or on two federating servers (weft and weft, or weft and
Synapse): keys are uploaded, queried and claimed (across servers through federation), the
Megolm room key travels as an Olm-encrypted to-device message, and each side decrypts the
other's m.room.encrypted messages. The servers only store and relay keys.

Usage: nio_e2ee.py HOMESERVER_A [HOMESERVER_B]
"""

import asyncio
import sys
import tempfile
import time

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)


def check(condition, what):
    """`what` may end in " (details)": shown in full on failure only."""
    if not condition:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what.split(' (')[0]}", flush=True)


async def make_user(homeserver: str, name: str, store: str) -> AsyncClient:
    # Loopback test servers use self-signed certificates.
    registrar = AsyncClient(homeserver, name, ssl=False)
    reg = await registrar.register(name, f"{name}-password")
    check(isinstance(reg, RegisterResponse), f"{name} registers ({reg})")
    await registrar.close()
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(homeserver, reg.user_id, store_path=store, config=config, ssl=False)
    login = await client.login(f"{name}-password", device_name=f"{name}'s e2ee device")
    check(isinstance(login, LoginResponse), f"{name} logs in with encryption ({login})")
    if client.should_upload_keys:
        upload = await client.keys_upload()
        check(not hasattr(upload, "status_code"), f"{name} uploads device and one-time keys ({upload})")
    return client


async def texts_after_sync(client: AsyncClient, room_id: str):
    response = await client.sync(timeout=3000, full_state=False)
    check(isinstance(response, SyncResponse), f"sync ({response})")
    room = response.rooms.join.get(room_id)
    if room is None:
        return [], []
    texts = [e.body for e in room.timeline.events if isinstance(e, RoomMessageText)]
    undecrypted = [e for e in room.timeline.events if isinstance(e, MegolmEvent)]
    return texts, undecrypted


async def main(homeserver_a: str, homeserver_b: str) -> None:
    with tempfile.TemporaryDirectory() as store_a, tempfile.TemporaryDirectory() as store_b:
        run = str(int(time.time() * 1000) % 1000000)
        alice = await make_user(homeserver_a, f"ealice{run}", store_a)
        bob = await make_user(homeserver_b, f"ebob{run}", store_b)
        try:
            created = await alice.room_create(
                name="secret room",
                invite=[bob.user_id],
                initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
            )
            check(isinstance(created, RoomCreateResponse), f"alice creates an encrypted room ({created})")
            room_id = created.room_id
            # Wait for the invite (it may come over federation), then join.
            for _ in range(30):
                synced = await bob.sync(timeout=2000)
                if isinstance(synced, SyncResponse) and room_id in synced.rooms.invite:
                    break
            joined = None
            for _ in range(10):
                joined = await bob.join(room_id)
                if isinstance(joined, JoinResponse):
                    break
                await asyncio.sleep(1)
            check(isinstance(joined, JoinResponse), f"bob joins ({joined})")
            # Until both servers show both members, keys cannot be shared.
            for _ in range(30):
                await alice.sync(timeout=2000, full_state=True)
                if bob.user_id in alice.rooms[room_id].users:
                    break
            await bob.sync(timeout=0, full_state=True)
            check(alice.rooms[room_id].encrypted, "alice's client sees the room as encrypted")

            for client in (alice, bob):
                if client.should_query_keys:
                    await client.keys_query()

            sent = await alice.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": "the eagle lands at dawn"}, ignore_unverified_devices=True
            )
            check(isinstance(sent, RoomSendResponse), f"alice sends an encrypted message ({sent})")

            # The raw event on the server is ciphertext.
            texts, undecrypted = await texts_after_sync(bob, room_id)
            for _ in range(15):
                if "the eagle lands at dawn" in texts:
                    break
                more, undecrypted = await texts_after_sync(bob, room_id)
                texts += more
            check("the eagle lands at dawn" in texts, f"bob decrypts alice's message (texts={texts}, undecrypted={undecrypted})")

            if bob.should_query_keys:
                await bob.keys_query()
            reply = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "copy that"}, ignore_unverified_devices=True)
            check(isinstance(reply, RoomSendResponse), f"bob replies encrypted ({reply})")
            texts, undecrypted = await texts_after_sync(alice, room_id)
            for _ in range(15):
                if "copy that" in texts:
                    break
                more, undecrypted = await texts_after_sync(alice, room_id)
                texts += more
            check("copy that" in texts, f"alice decrypts bob's reply (texts={texts}, undecrypted={undecrypted})")
        finally:
            await alice.close()
            await bob.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]))
