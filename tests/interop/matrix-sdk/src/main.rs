//! Interop test: matrix-sdk and matrix-sdk-ui (the Rust SDK under Element X) against a
//! running weft server.
//!
//! Usage: weft-interop-matrix-sdk http://127.0.0.1:PORT
//!
//! Walks through what Element X does: register and log in, run the SyncService (simplified
//! sliding sync), watch the room list, use timelines, receipts, typing, an encrypted room
//! and media. Prints `ok: <step>` per step and stops at the first failure with
//! `FAIL: <why>` and a non-zero exit code. Set RUST_LOG (e.g. `matrix_sdk=debug`) to see
//! the SDK's own logs on stderr.

use std::{
    cell::Cell,
    pin::pin,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use eyeball_im::Vector;
use futures_util::StreamExt;
use matrix_sdk::{
    Client, Room, RoomState,
    attachment::{AttachmentInfo, BaseImageInfo},
    media::{MediaFormat, MediaRequestParameters},
    ruma::{
        OwnedEventId, OwnedUserId, RoomId, UInt, UserId,
        api::{
            MatrixVersion,
            client::{
                account::register::v3::Request as RegistrationRequest,
                receipt::create_receipt::v3::ReceiptType as SendReceiptType,
                room::create_room::v3::{Request as CreateRoomRequest, RoomPreset},
                uiaa,
            },
        },
        assign,
        events::{
            InitialStateEvent,
            receipt::{ReceiptThread, ReceiptType},
            room::{
                encryption::RoomEncryptionEventContent,
                member::MembershipState,
                message::{
                    ImageMessageEventContent, MessageType, RoomMessageEventContent,
                    RoomMessageEventContentWithoutRelation,
                },
            },
        },
    },
    sliding_sync::{Version, VersionBuilder},
};
use matrix_sdk_ui::{
    room_list_service::{RoomListItem, RoomListService, State as RoomListState, filters::new_filter_invite},
    sync_service::{State as SyncState, SyncService},
    timeline::{
        AttachmentConfig, AttachmentSource, EventSendState, EventTimelineItem, RoomExt, Timeline,
        TimelineReadReceiptTracking,
    },
};
use tempfile::TempDir;
use tokio::{
    sync::broadcast::error::RecvError,
    time::{sleep, timeout},
};

/// Bound on every wait for something to come back through sync.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// An 8x8 RGB PNG (a small colour gradient), small enough to inline.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00,
    0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x08, 0x08, 0x02, 0x00, 0x00, 0x00, 0x4b, 0x6d, 0x29, 0xdc, 0x00,
    0x00, 0x00, 0x6c, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x15, 0xcd, 0x41, 0x15, 0x00, 0x51, 0x08, 0x42,
    0x51, 0xa3, 0x18, 0x85, 0x28, 0x46, 0x79, 0x51, 0x88, 0x42, 0x14, 0xa2, 0xcc, 0x1f, 0x97, 0x5c, 0x0e,
    0xce, 0x0c, 0x3b, 0x68, 0xb8, 0x81, 0xc1, 0x43, 0x86, 0x0e, 0x33, 0xcb, 0x2e, 0x5a, 0x6e, 0x61, 0xf1,
    0x92, 0xa5, 0xfb, 0x40, 0xac, 0x90, 0x38, 0x81, 0xb0, 0x88, 0xa8, 0x1e, 0x1c, 0x7b, 0xe8, 0xb8, 0x83,
    0xc3, 0x47, 0x8e, 0xde, 0x83, 0x7f, 0xe0, 0x55, 0x5f, 0xf8, 0x9f, 0x21, 0xd0, 0xf7, 0x6e, 0xcc, 0x1a,
    0x99, 0xf3, 0x1f, 0xdb, 0xc4, 0xd4, 0x0f, 0xc2, 0x06, 0x85, 0xcb, 0x5f, 0x76, 0x48, 0x68, 0x1e, 0x94,
    0x2d, 0x2a, 0xd7, 0x7f, 0xc2, 0x25, 0xa5, 0xe5, 0x03, 0xc6, 0x7b, 0x58, 0x01, 0x57, 0x39, 0x36, 0xf2,
    0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A logged-in user with Element X's sync machinery running.
struct User {
    name: &'static str,
    id: OwnedUserId,
    client: Client,
    sync: SyncService,
    rooms: Arc<RoomListService>,
    /// Holds the sqlite stores; removed when the run ends.
    _store: TempDir,
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::var("RUST_LOG").is_ok_and(|filter| !filter.is_empty()) {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let Some(homeserver) = std::env::args().nth(1) else {
        eprintln!("usage: weft-interop-matrix-sdk <homeserver base URL>");
        return ExitCode::from(2);
    };
    // Every wait inside is bounded too; this only guards against a hang in between.
    match timeout(Duration::from_secs(600), run(&homeserver)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            println!("FAIL: {err:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("FAIL: the whole run took longer than 10 minutes");
            ExitCode::FAILURE
        }
    }
}

fn ok(step: &str) {
    println!("ok: {step}");
}

async fn run(homeserver: &str) -> Result<()> {
    // 1. Accounts and sessions.
    let suffix = unique_suffix();
    let (alice_client, alice_store) = sign_up(homeserver, "alice", &suffix).await.context("alice")?;
    let (bob_client, bob_store) = sign_up(homeserver, "bob", &suffix).await.context("bob")?;
    ok("registered (m.login.dummy) and logged in alice and bob, with refresh tokens");
    ok("sliding sync discovered from /versions as native (org.matrix.simplified_msc3575)");

    // 2. Sync services.
    let alice = start_sync("alice", alice_client, alice_store).await?;
    let bob = start_sync("bob", bob_client, bob_store).await?;
    ok("both SyncServices running, room lists loaded over simplified sliding sync");

    // 3. Room, invite through the room list, join.
    let room = alice
        .client
        .create_room(assign!(CreateRoomRequest::new(), {
            name: Some("weft interop".to_owned()),
            invite: vec![bob.id.clone()],
            preset: Some(RoomPreset::PrivateChat),
        }))
        .await
        .context("alice creating a room")?;
    wait_for_invite(&bob, room.room_id()).await?;
    ok("bob's room list shows alice's invite");
    let bob_room = join(&bob, &room).await?;
    ok("bob joined the room and alice sees him as a member");

    // 4. Timelines both ways.
    let alice_tl = open_timeline(&alice, &room).await?;
    let bob_tl = open_timeline(&bob, &bob_room).await?;
    let hello = "hello bob, from matrix-sdk";
    let hello_id = send_text(&alice_tl, hello).await?;
    let seen =
        wait_for_event(&bob_tl, &alice.id, "bob to see alice's message", |ev| is_text(ev, hello)).await?;
    ensure!(seen.event_id() == Some(&*hello_id), "bob saw a different event id than alice sent");
    ok("alice's message shows in bob's timeline");

    let reply = "hi alice, this is a reply";
    bob_tl
        .send_reply(RoomMessageEventContentWithoutRelation::text_plain(reply), hello_id.clone())
        .await
        .context("bob sending a reply")?;
    wait_sent(&bob_tl, "bob's reply to be sent", |ev| is_text(ev, reply)).await?;
    let seen =
        wait_for_event(&alice_tl, &bob.id, "alice to see bob's reply", |ev| is_text(ev, reply)).await?;
    let replied_to = seen.content().in_reply_to().map(|details| details.event_id);
    ensure!(replied_to.as_ref() == Some(&hello_id), "bob's reply points at {replied_to:?}, not {hello_id}");
    ok("bob's reply shows in alice's timeline, as a reply to her message");

    // 5. Read receipts: a new message, so bob's implicit receipt (on his reply) does not cover it.
    let read_me = "please send a read receipt for this one";
    let read_me_id = send_text(&alice_tl, read_me).await?;
    wait_for_event(&bob_tl, &alice.id, "bob to see the message to mark read", |ev| is_text(ev, read_me))
        .await?;
    let sent = bob_tl
        .send_single_receipt(SendReceiptType::Read, read_me_id.clone())
        .await
        .context("bob sending a read receipt")?;
    ensure!(sent, "bob's timeline thought the read receipt was already covered and did not send it");
    wait_until(
        "alice to see bob's read receipt (room store and timeline item)",
        async || -> Result<Option<()>> {
            let stored =
                room.load_user_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, &bob.id).await?;
            let in_store = stored.is_some_and(|(event_id, _)| event_id == read_me_id);
            let on_item =
                alice_tl.items().await.iter().filter_map(|item| item.as_event()).any(|ev| {
                    ev.event_id() == Some(&*read_me_id) && ev.read_receipts().contains_key(&*bob.id)
                });
            Ok((in_store && on_item).then_some(()))
        },
    )
    .await?;
    ok("alice sees bob's read receipt on her message");

    // Typing: subscribe first so the notice cannot slip by.
    let (_typing_guard, mut typing) = bob_room.subscribe_to_typing_notifications();
    room.typing_notice(true).await.context("alice sending a typing notice")?;
    let typed = timeout(WAIT, async {
        loop {
            match typing.recv().await {
                Ok(users) if users.contains(&alice.id) => break Ok(()),
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(err) => break Err(err),
            }
        }
    })
    .await;
    match typed {
        Ok(Ok(())) => {}
        Ok(Err(err)) => bail!("bob's typing notifications stopped: {err}"),
        Err(_) => bail!("timed out after {WAIT:?} waiting for bob to see alice typing"),
    }
    room.typing_notice(false).await.context("alice clearing her typing notice")?;
    ok("bob sees alice typing");

    // 6. Encrypted room: m.room.encryption in the initial state, as Element X creates rooms.
    let secret_room = alice
        .client
        .create_room(assign!(CreateRoomRequest::new(), {
            name: Some("weft interop e2ee".to_owned()),
            invite: vec![bob.id.clone()],
            preset: Some(RoomPreset::PrivateChat),
            initial_state: vec![
                InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
                    .to_raw_any(),
            ],
        }))
        .await
        .context("alice creating an encrypted room")?;
    ensure!(secret_room.latest_encryption_state().await?.is_encrypted(), "alice's new room is not encrypted");
    wait_for_invite(&bob, secret_room.room_id()).await?;
    let bob_secret_room = join(&bob, &secret_room).await?;
    ensure!(
        bob_secret_room.latest_encryption_state().await?.is_encrypted(),
        "bob does not see the room as encrypted"
    );
    ok("bob joined alice's encrypted room");

    let alice_stl = open_timeline(&alice, &secret_room).await?;
    let bob_stl = open_timeline(&bob, &bob_secret_room).await?;
    let hello = "an encrypted hello from alice";
    encrypted_exchange(&alice, &alice_stl, &bob, &bob_stl, hello).await?;
    let answer = "an encrypted answer from bob";
    encrypted_exchange(&bob, &bob_stl, &alice, &alice_stl, answer).await?;

    // 7. Media in the plain room, downloaded by bob through authenticated media (v1.11).
    let versions = bob.client.server_versions().await.context("fetching /versions")?;
    ensure!(
        versions.contains(&MatrixVersion::V1_11),
        "/versions lacks v1.11, so the SDK would not use authenticated media"
    );
    let config = AttachmentConfig {
        info: Some(AttachmentInfo::Image(BaseImageInfo {
            width: Some(UInt::from(8u32)),
            height: Some(UInt::from(8u32)),
            size: Some(UInt::from(PNG.len() as u32)),
            ..Default::default()
        })),
        ..Default::default()
    };
    let source = AttachmentSource::Data { bytes: PNG.to_vec(), filename: "weft-interop.png".to_owned() };
    // Through the send queue, as Element X does: upload, then send the m.image event.
    alice_tl
        .send_attachment(source, mime::IMAGE_PNG, config)
        .use_send_queue()
        .await
        .context("alice queueing an image")?;
    wait_sent(&alice_tl, "alice's image to be uploaded and sent", |ev| as_image(ev).is_some()).await?;
    let seen =
        wait_for_event(&bob_tl, &alice.id, "bob to see alice's m.image", |ev| as_image(ev).is_some()).await?;
    let image = as_image(&seen).context("the m.image item lost its content")?;
    let request = MediaRequestParameters { source: image.source.clone(), format: MediaFormat::File };
    // No cache: bob never had the file, and this must hit weft's download endpoint.
    let bytes =
        bob.client.media().get_media_content(&request, false).await.context("bob downloading the image")?;
    ensure!(bytes == PNG, "downloaded {} bytes that differ from the {} uploaded", bytes.len(), PNG.len());
    ok("bob sees alice's m.image and downloads the same bytes via authenticated media");

    // 8. Clean shutdown.
    for user in [&alice, &bob] {
        user.sync.stop().await;
        match user.sync.state().get() {
            SyncState::Idle | SyncState::Terminated => {}
            other => bail!("{}'s sync service is {other:?} after stop()", user.name),
        }
    }
    ok("both sync services stopped cleanly");
    Ok(())
}

/// `from` sends `text` in an encrypted room; `to` must get it decrypted, not as a UTD.
async fn encrypted_exchange(
    from: &User,
    from_tl: &Timeline,
    to: &User,
    to_tl: &Timeline,
    text: &str,
) -> Result<()> {
    send_text(from_tl, text).await?;
    let what = format!("{} to decrypt {}'s message", to.name, from.name);
    let seen = wait_for_event(to_tl, &from.id, &what, |ev| is_text(ev, text)).await?;
    ensure!(seen.encryption_info().is_some(), "{}'s message reached {} unencrypted", from.name, to.name);
    ok(&format!("{} decrypted {}'s message in the encrypted room", to.name, from.name));
    Ok(())
}

/// Builds a client like Element X does and registers + logs in `<name>-<suffix>`.
async fn sign_up(homeserver: &str, name: &str, suffix: &str) -> Result<(Client, TempDir)> {
    let store = tempfile::tempdir()?;
    let client = Client::builder()
        .homeserver_url(homeserver)
        // Use sliding sync only if /versions advertises it (org.matrix.simplified_msc3575).
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .sqlite_store(store.path(), None)
        .handle_refresh_tokens()
        .build()
        .await
        .context("building the client (DiscoverNative needs org.matrix.simplified_msc3575 in /versions)")?;
    let version = client.sliding_sync_version();
    ensure!(matches!(version, Version::Native), "sliding sync version is {version:?}, not native");

    let localpart = format!("{name}-{suffix}");
    let password = format!("interop-{suffix}-{name}");
    register(&client, &localpart, &password).await?;
    let response = client
        .matrix_auth()
        .login_username(&localpart, &password)
        .initial_device_display_name(&format!("weft interop ({name})"))
        .request_refresh_token()
        .send()
        .await
        .context("login_username")?;
    ensure!(response.refresh_token.is_some(), "login asked for a refresh token but got none");
    // Logging in spawns E2EE setup (device keys, backups state); let it settle.
    let _ = timeout(WAIT, client.encryption().wait_for_e2ee_initialization_tasks()).await;
    Ok((client, store))
}

/// Registers through user-interactive auth: a bare request to learn the session, then m.login.dummy.
async fn register(client: &Client, localpart: &str, password: &str) -> Result<()> {
    let auth = client.matrix_auth();
    let request = |auth_data: Option<uiaa::AuthData>| {
        assign!(RegistrationRequest::new(), {
            username: Some(localpart.to_owned()),
            password: Some(password.to_owned()),
            auth: auth_data,
            // No session from /register: we log in with login_username afterwards.
            inhibit_login: true,
        })
    };
    let session = match auth.register(request(None)).await {
        Ok(_) => return Ok(()), // the server needed no UIA step
        // A 401 carrying the UIA flows (and session id) is the expected answer.
        Err(err) => match err.as_uiaa_response().map(|info| info.session.clone()) {
            Some(session) => session,
            None => return Err(err).context("register (first, unauthenticated request)"),
        },
    };
    let mut dummy = uiaa::Dummy::new();
    dummy.session = session;
    auth.register(request(Some(uiaa::AuthData::Dummy(dummy))))
        .await
        .context("register with m.login.dummy")?;
    Ok(())
}

/// Starts the SyncService and waits until its room list has really synced.
async fn start_sync(name: &'static str, client: Client, store: TempDir) -> Result<User> {
    let id = client.user_id().context("client not logged in")?.to_owned();
    let sync = SyncService::builder(client.clone()).build().await.context("building the SyncService")?;
    sync.start().await;
    let rooms = sync.room_list_service();
    // SyncService says Running as soon as it starts; the room list state machine only gets
    // to Running after sliding sync requests succeeded, so wait for both.
    wait_until(&format!("{name}'s sync service and room list to run"), async || -> Result<Option<()>> {
        if let SyncState::Error(err) = sync.state().get() {
            bail!("{name}'s sync service failed: {err}");
        }
        let running = matches!(sync.state().get(), SyncState::Running)
            && matches!(rooms.state().get(), RoomListState::Running);
        Ok(running.then_some(()))
    })
    .await?;

    // Report later sync failures as they happen, since waits would only show a timeout.
    let mut states = sync.state();
    tokio::spawn(async move {
        while let Some(state) = states.next().await {
            if let SyncState::Error(err) = state {
                eprintln!("note: {name}'s sync service failed: {err}");
            }
        }
    });
    Ok(User { name, id, client, sync, rooms, _store: store })
}

/// Waits until the user's room list, filtered to invites like Element X's Invites tab, holds the room.
async fn wait_for_invite(user: &User, room_id: &RoomId) -> Result<()> {
    let all_rooms = user.rooms.all_rooms().await.context("all_rooms")?;
    let (entries, controller) = all_rooms.entries_with_dynamic_adapters(50);
    let mut entries = pin!(entries);
    controller.set_filter(Box::new(new_filter_invite()));
    let mut invites: Vector<RoomListItem> = Vector::new();
    let found = timeout(WAIT, async {
        while let Some(diffs) = entries.next().await {
            for diff in diffs {
                diff.apply(&mut invites);
            }
            if invites.iter().any(|item| item.room_id() == room_id) {
                return true;
            }
        }
        false
    })
    .await;
    match found {
        Ok(true) => Ok(()),
        Ok(false) => bail!("{}'s room list stream ended before the invite to {room_id} showed", user.name),
        Err(_) => bail!(
            "timed out after {WAIT:?} waiting for {}'s room list to show the invite to {room_id}",
            user.name
        ),
    }
}

/// The user joins `room` (created by the other party, whose view of the membership we wait on).
async fn join(user: &User, room: &Room) -> Result<Room> {
    let joined =
        user.rooms.room(room.room_id()).context("invited room missing from the room list service")?;
    joined.join().await.with_context(|| format!("{} joining {}", user.name, room.room_id()))?;
    wait_until(&format!("{}'s room to be in the joined state", user.name), async || -> Result<Option<()>> {
        Ok((joined.state() == RoomState::Joined).then_some(()))
    })
    .await?;
    // The creator must see the join before encrypting for the new member.
    wait_until(&format!("the room creator to see {} joined", user.name), async || -> Result<Option<()>> {
        let member = room.get_member_no_sync(&user.id).await?;
        Ok(member.filter(|m| *m.membership() == MembershipState::Join).map(|_| ()))
    })
    .await?;
    Ok(joined)
}

/// Opens a room the way Element X does: room subscription plus a live timeline with receipts.
async fn open_timeline(user: &User, room: &Room) -> Result<Timeline> {
    user.rooms.subscribe_to_rooms(&[room.room_id()]).await;
    room.timeline_builder()
        .track_read_marker_and_receipts(TimelineReadReceiptTracking::AllEvents)
        .build()
        .await
        .with_context(|| format!("{}'s timeline for {}", user.name, room.room_id()))
}

/// Sends a text through the timeline (send queue) and returns its event id once weft accepted it.
async fn send_text(timeline: &Timeline, body: &str) -> Result<OwnedEventId> {
    timeline
        .send(RoomMessageEventContent::text_plain(body).into())
        .await
        .with_context(|| format!("queueing {body:?}"))?;
    wait_sent(timeline, &format!("{body:?} to be sent"), |ev| is_text(ev, body)).await
}

/// Waits until our own item matching `pred` has an event id; fails early on a send error.
async fn wait_sent(
    timeline: &Timeline,
    what: &str,
    pred: impl Fn(&EventTimelineItem) -> bool,
) -> Result<OwnedEventId> {
    wait_until(what, async || -> Result<Option<OwnedEventId>> {
        for item in timeline.items().await.iter() {
            let Some(ev) = item.as_event() else { continue };
            if !ev.is_own() || !pred(ev) {
                continue;
            }
            if let Some(EventSendState::SendingFailed { error, .. }) = ev.send_state() {
                bail!("the send queue failed to send it: {error:?}");
            }
            if let Some(event_id) = ev.event_id() {
                return Ok(Some(event_id.to_owned()));
            }
        }
        Ok(None)
    })
    .await
}

/// Waits until `timeline` shows a remote event from `sender` matching `pred`.
async fn wait_for_event(
    timeline: &Timeline,
    sender: &UserId,
    what: &str,
    pred: impl Fn(&EventTimelineItem) -> bool,
) -> Result<EventTimelineItem> {
    // Counted so a timeout in the encrypted room says whether events were there but undecryptable.
    let undecryptable = Cell::new(0);
    let found = wait_until(what, async || -> Result<Option<EventTimelineItem>> {
        let mut utd = 0;
        for item in timeline.items().await.iter() {
            let Some(ev) = item.as_event() else { continue };
            if ev.sender() != sender || ev.event_id().is_none() {
                continue;
            }
            if ev.content().is_unable_to_decrypt() {
                utd += 1;
            } else if pred(ev) {
                return Ok(Some(ev.clone()));
            }
        }
        undecryptable.set(utd);
        Ok(None)
    })
    .await;
    match (found, undecryptable.get()) {
        (Err(err), utd) if utd > 0 => {
            Err(anyhow!("{err:#} ({utd} events from {sender} stayed unable to decrypt)"))
        }
        (found, _) => found,
    }
}

fn is_text(ev: &EventTimelineItem, body: &str) -> bool {
    ev.content().as_message().is_some_and(|message| message.body() == body)
}

fn as_image(ev: &EventTimelineItem) -> Option<ImageMessageEventContent> {
    match ev.content().as_message()?.msgtype() {
        MessageType::Image(image) => Some(image.clone()),
        _ => None,
    }
}

/// Polls `check` until it yields a value, at most WAIT; its errors end the wait at once.
async fn wait_until<T>(what: &str, mut check: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await.with_context(|| format!("while waiting for {what}"))? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {WAIT:?} waiting for {what}");
        }
        sleep(POLL).await;
    }
}

/// Distinct localparts per run, so a reused server never sees the same user twice.
fn unique_suffix() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{:x}{:x}", std::process::id(), nanos % 0x1_0000_0000)
}
