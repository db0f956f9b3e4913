"""synadm (PyPI, the Synapse admin CLI) drives weft's admin API: users listed, queried,
created, modified, their password changed, whois, memberships, deactivation; rooms
listed, searched, sorted, their details, members and state; a room deleted, purged and
blocked. Each step
runs the real synadm command and checks its JSON output and, through the Client-Server
API, its effect.

    python synadm_check.py http://127.0.0.1:PORT SHARED_SECRET SYNADM_BIN
"""
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

base, secret, synadm_bin = sys.argv[1], sys.argv[2], sys.argv[3]


def call(method, path, body=None, token=None):
    request = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def check(condition, what):
    if not condition:
        sys.exit(f"FAIL: {what}")
    print(f"ok: {what}")


def login(user, password):
    return call("POST", "/_matrix/client/v3/login", {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})


# An admin (shared-secret registration, as register_new_matrix_user does) and a user.
_, nonce = call("GET", "/_synapse/admin/v1/register")
mac = hmac.new(secret.encode(), f"{nonce['nonce']}\0root\0root-pw\0admin".encode(), hashlib.sha1).hexdigest()
status, admin = call("POST", "/_synapse/admin/v1/register", {"nonce": nonce["nonce"], "username": "root", "password": "root-pw", "admin": True, "mac": mac})
check(status == 200, f"admin registered ({status} {admin})")
status, alice = call("POST", "/_matrix/client/v3/register", {"username": "alice", "password": "alice-pw", "auth": {"type": "m.login.dummy"}})
check(status == 200, "alice registered")
_, room = call("POST", "/_matrix/client/v3/createRoom", {"name": "synadm"}, alice["access_token"])
server_name = admin["user_id"].split(":", 1)[1]
alice_id = alice["user_id"]

home = tempfile.mkdtemp()
os.makedirs(f"{home}/.config")
with open(f"{home}/.config/synadm.yaml", "w") as config:
    config.write(
        f"user: root\ntoken: {admin['access_token']}\nbase_url: {base}\nadmin_path: /_synapse/admin\n"
        f"matrix_path: /_matrix\ntimeout: 30\nserver_discovery: well-known\nhomeserver: {server_name}\n"
        "ssl_verify: false\nformat: json\n"
    )


def synadm(*args):
    result = subprocess.run([synadm_bin, "--batch", "-o", "json", *args], env={**os.environ, "HOME": home}, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        sys.exit(f"FAIL: synadm {' '.join(args)} exited {result.returncode}: {result.stderr}{result.stdout}")
    out = result.stdout.strip()
    try:
        return json.loads(out) if out else None
    except json.JSONDecodeError:
        return out


listed = synadm("user", "list")
names = [u["name"] for u in listed["users"]]
check(admin["user_id"] in names and alice_id in names, f"user list shows both accounts ({names})")
check(listed["total"] == 2, "user list total")

details = synadm("user", "details", alice_id)
check(details["name"] == alice_id and details["admin"] is False, "user details")

synadm("user", "modify", "@bob:" + server_name, "-P", "bob-pw", "-n", "Bob Synadm")
status, _ = login("bob", "bob-pw")
check(status == 200, "user modify created bob, who logs in")
_, profile = call("GET", f"/_matrix/client/v3/profile/@bob:{server_name}/displayname")
check(profile.get("displayname") == "Bob Synadm", f"bob's display name ({profile})")

synadm("user", "modify", alice_id, "-n", "Alice Renamed")
_, profile = call("GET", f"/_matrix/client/v3/profile/{alice_id}/displayname")
check(profile.get("displayname") == "Alice Renamed", "user modify renamed alice")

synadm("user", "password", alice_id, "-p", "new-pw")
check(login("alice", "alice-pw")[0] == 403 and login("alice", "new-pw")[0] == 200, "user password changed the password")

whois = synadm("user", "whois", admin["user_id"])
check(isinstance(whois, dict) and whois.get("user_id") == admin["user_id"], f"user whois ({whois})")

membership = synadm("user", "membership", alice_id)
check(room["room_id"] in membership["joined_rooms"], f"user membership ({membership})")

rooms = synadm("room", "list")
check(any(r["room_id"] == room["room_id"] and r["name"] == "synadm" for r in rooms["rooms"]), f"room list ({rooms})")
rooms = synadm("room", "list", "-n", "SYNA", "-s", "joined_members")
check(rooms["total_rooms"] == 1, "room list -n -s")
details = synadm("room", "details", room["room_id"])
check(details["creator"] == alice_id and details["joined_members"] == 1, f"room details ({details})")
members = synadm("room", "members", room["room_id"])
check(members["members"] == [alice_id], f"room members ({members})")
state = synadm("room", "state", room["room_id"])
check(any(e["type"] == "m.room.create" for e in state["state"]), "room state")

# (alice's sessions ended with her password change; the room is bob's.)
_, bob_session = login("bob", "bob-pw")
_, doomed = call("POST", "/_matrix/client/v3/createRoom", {"name": "doomed"}, bob_session["access_token"])
synadm("room", "delete", doomed["room_id"], "-b")
status, _ = call("GET", f"/_synapse/admin/v1/rooms/{doomed['room_id']}", None, admin["access_token"])
check(status == 404, "room delete purged the room")
blocked = synadm("room", "block-status", doomed["room_id"])
check(isinstance(blocked, dict) and blocked.get("block") is True, f"room block-status after delete -b ({blocked})")
status, _ = call("POST", f"/_matrix/client/v3/join/{doomed['room_id']}", {}, bob_session["access_token"])
check(status == 403, "the blocked room cannot be joined")

synadm("user", "deactivate", alice_id)
check(login("alice", "new-pw")[0] in (401, 403), "user deactivate: alice can no longer log in")
listed = synadm("user", "list", "-d")
check(any(u["name"] == alice_id and u["deactivated"] for u in listed["users"]), "user list -d shows alice deactivated")
print("all synadm checks passed")
