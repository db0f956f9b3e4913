//! Wiring: builds the typed handles once, mounts the routes, serves until shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;

use axum::{
    extract::Request,
    http::{header, Method},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, put},
    Router,
};
#[allow(deprecated)]
use ruma::api::client::media as legacy_media;
use ruma::api::client::{
    authenticated_media::{get_content, get_content_as_filename, get_content_thumbnail, get_media_config},
    media::{create_content, create_content_async, create_mxc_uri},
    backup::{
        add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
        delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version,
        get_backup_info, get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info,
        update_backup_version,
    },
    keys::{claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys},
    push::{
        delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
        get_pushrules_all, get_pushrules_global_scope, set_pusher, set_pushrule, set_pushrule_actions, set_pushrule_enabled,
    },
    filter::{create_filter, get_filter},
    presence::{get_presence, set_presence},
    read_marker::set_read_marker,
    receipt::create_receipt,
    sync::sync_events,
    to_device::send_event_to_device,
    typing::create_typing_event,
    alias::{create_alias, delete_alias, get_alias},
    config::{get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data},
    context::get_context,
    directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
    redact::redact_event,
    relations::{get_relating_events, get_relating_events_with_rel_type, get_relating_events_with_rel_type_and_event_type},
    tag::{create_tag, delete_tag, get_tags},
    threads::get_threads,
    account::{change_password, deactivate, get_username_availability, register, whoami},
    device::{delete_device, delete_devices, get_device, get_devices, update_device},
    discovery::{discover_homeserver, get_capabilities, get_supported_versions},
    knock::knock_room,
    membership::{
        ban_user, forget_room, get_member_events, invite_user, join_room_by_id, join_room_by_id_or_alias, joined_members,
        joined_rooms, kick_user, leave_room, unban_user,
    },
    message::{get_message_events, send_message_event},
    profile::{get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name},
    room::{aliases, create_room, get_event_by_timestamp, get_room_event, report_content, report_room, upgrade_room},
    session::{get_login_types, login, logout, logout_all, refresh_token},
    state::{get_state_event_for_key, get_state_events, send_state_event},
};
use tokio::net::TcpListener;
use tower_http::{
    cors::{Any, CorsLayer},
    limit::RequestBodyLimitLayer,
    trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::{
    accounts::Accounts,
    appservice::{client::AppServiceClient, ephemeral::EphemeralOutbox, sender::TransactionSender, AppServices},
    client_api::{
        account, account_data, appservice, directory, discovery, keys, media, membership, rate_limit::RateLimiter, relations, room_events, room_upgrade,
        router::{method_not_allowed, unrecognized, RumaRouter},
        push, session, sliding_sync, sync, ClientApiState,
    },
    config::{Config, ListenerConfig, Resource},
    crypto::ServerKeys,
    error::MatrixError,
    rooms::Rooms,
    storage::Db,
    ephemeral::{presence::Presence, receipts::Receipts, to_device::ToDevice, typing::Typing},
    e2ee::E2ee,
    federation::{server as fed, Federation},
    media::Media,
    push::{gateway::Gateway, Push},
    sync::{notifier::Notifier, Sync},
};

/// The typed handles the program is made of, built once.
pub struct Services {
    pub config: Arc<Config>,
    pub db: Db,
    pub accounts: Accounts,
    pub rooms: Rooms,
    pub sync: Sync,
    pub typing: Typing,
    pub receipts: Receipts,
    pub presence: Presence,
    pub to_device: ToDevice,
    pub push: Push,
    pub e2ee: E2ee,
    pub media: Media,
    pub url_previews: crate::media::preview::UrlPreviews,
    pub federation: Federation,
    pub appservices: AppServices,
    pub appservice_client: AppServiceClient,
    pub appservice_ephemeral: EphemeralOutbox,
}

impl Services {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
        let appservices = AppServices::new(crate::appservice::registration::load(&config.app_service_config_files, &config.server_name)?);
        let db = Db::open_with(&config.database_options()).await?;
        let keys = ServerKeys::load_or_generate(config.server_name.clone(), &config.data_dir)?;
        crate::federation::tls::install_crypto_provider();

        let notifier = Notifier::new();
        let mut extra_roots = Vec::new();
        for file in &config.federation.extra_ca_files {
            let pem = std::fs::read(file).map_err(|e| anyhow::anyhow!("reading CA file {}: {e}", file.display()))?;
            extra_roots.extend(reqwest::Certificate::from_pem_bundle(&pem).with_context(|| format!("CA file {} is not PEM certificates", file.display()))?);
        }
        let appservice_client = AppServiceClient::new(appservices.clone(), &extra_roots);
        let dns = crate::outbound::GuardedDns::with_extra_roots(config.federation.ip_range_blocklist.clone(), extra_roots);
        let push = Push::new(db.clone(), config.server_name.clone(), Gateway::new(db.clone(), dns.clone()));
        let outbox_signal = crate::rooms::OutboxSignal::default();
        let rooms = Rooms::new(db.clone(), keys.clone(), notifier.clone(), push.clone(), outbox_signal.clone(), config.default_room_version.clone());
        let edus = crate::outbox::EduQueue::new(db.clone(), outbox_signal.clone(), config.server_name.clone());
        let appservice_ephemeral = EphemeralOutbox::new(&appservices);
        let typing = Typing::new(db.clone(), notifier.clone(), edus.clone()).with_appservices(appservice_ephemeral.clone());
        let receipts = Receipts::new(rooms.clone(), notifier.clone(), edus.clone(), push.clone()).with_appservices(appservice_ephemeral.clone());
        let presence = Presence::new(db.clone(), notifier.clone(), config.presence.enabled)
            .await?
            .with_federation(edus.clone())
            .with_appservices(appservice_ephemeral.clone());
        let to_device = ToDevice::new(db.clone(), notifier.clone()).with_federation(edus.clone()).with_appservices(appservice_ephemeral.clone());
        let e2ee = E2ee::new(db.clone(), notifier.clone()).with_federation(edus.clone());
        let accounts = Accounts::new(db.clone(), config.server_name.clone())
            .with_refreshable_lifetime(Duration::from_secs(config.refreshable_access_token_lifetime_secs.max(1)))
            .with_device_lists(e2ee.clone());
        for service in appservices.all() {
            accounts.ensure_appservice_user(&service.sender, service.id()).await.map_err(|e| anyhow::anyhow!(e.message))?;
        }
        let federation = Federation::new(
            db.clone(),
            keys.clone(),
            &config.federation,
            dns.clone(),
            rooms.clone(),
            outbox_signal,
            crate::federation::Ephemeral {
                typing: typing.clone(),
                receipts: receipts.clone(),
                presence: presence.clone(),
                to_device: to_device.clone(),
                e2ee: e2ee.clone(),
            },
        )?;
        let mut media = Media::new(db.clone(), config.server_name.clone(), &config.data_dir, config.media.clone())
            .map_err(|e| anyhow::anyhow!(e.message))?;
        if config.federation.enabled {
            media = media.with_federation(federation.clone());
        }
        let url_previews = crate::media::preview::UrlPreviews::new(config.media.url_previews, dns, media.clone());
        let sync = Sync::new(
            db.clone(),
            rooms.clone(),
            notifier,
            typing.clone(),
            receipts.clone(),
            presence.clone(),
            to_device.clone(),
            push.clone(),
            e2ee.clone(),
        );
        Ok(Self {
            config: Arc::new(config),
            db,
            accounts,
            rooms,
            sync,
            typing,
            receipts,
            presence,
            to_device,
            push,
            e2ee,
            media,
            url_previews,
            federation,
            appservice_ephemeral,
            appservice_client,
            appservices,
        })
    }

    fn state(&self) -> ClientApiState {
        ClientApiState::new(crate::client_api::Services {
            config: self.config.clone(),
            accounts: self.accounts.clone(),
            rooms: self.rooms.clone(),
            rate_limiter: RateLimiter::new(self.config.rate_limits.clone()),
            shared_secret: Default::default(),
            sync: self.sync.clone(),
            typing: self.typing.clone(),
            receipts: self.receipts.clone(),
            presence: self.presence.clone(),
            to_device: self.to_device.clone(),
            push: self.push.clone(),
            e2ee: self.e2ee.clone(),
            media: self.media.clone(),
            url_previews: self.url_previews.clone(),
            federation: self.federation.clone(),
            appservices: self.appservices.clone(),
            appservice_client: self.appservice_client.clone(),
            protocol_cache: Default::default(),
        })
    }

    /// The client API (and our signing keys, which clients' servers may fetch from it too).
    pub fn router(&self) -> Router {
        self.with_common_layers(client_routes().merge(key_routes()))
    }

    /// The federation API, served over TLS.
    pub fn federation_router(&self) -> Router {
        self.with_common_layers(federation_routes())
    }

    /// What one listener serves: the client API, the federation API, or both on one port.
    /// Both include this server's keys.
    pub fn router_for(&self, listener: &ListenerConfig) -> Router {
        match (listener.serves(Resource::Client), listener.serves(Resource::Federation)) {
            (true, true) => self.with_common_layers(client_routes().merge(federation_routes())),
            (false, true) => self.federation_router(),
            _ => self.router(),
        }
    }

    fn with_common_layers(&self, routes: Router<ClientApiState>) -> Router {
        let state = self.state();
        routes
            .fallback(unrecognized)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state)
            .layer(RequestBodyLimitLayer::new(self.config.max_request_bytes))
            .layer(middleware::from_fn(json_errors_for_rejections))
            .layer(middleware::from_fn(server_timing))
            .layer(
                CorsLayer::new()
                    .allow_origin(Any)
                    .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
                    .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::HeaderName::from_static("x-requested-with")]),
            )
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                    .on_request(())
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            )
    }
}

fn key_routes() -> Router<ClientApiState> {
    use ruma::api::federation::discovery::{get_remote_server_keys, get_remote_server_keys_batch, get_server_keys};
    Router::new()
        .ruma::<get_server_keys::v2::Request, _, _>(fed::server_keys)
        .ruma::<get_remote_server_keys::v2::Request, _, _>(fed::notary_query)
        .ruma::<get_remote_server_keys_batch::v2::Request, _, _>(fed::notary_batch)
        .route("/_matrix/key/v2/server/{key_id}", get(fed::server_keys_by_key_id))
        .route("/_matrix/key/v2/query/{server_name}/{key_id}", get(fed::notary_query_by_key_id))
}

fn federation_routes() -> Router<ClientApiState> {
    use ruma::api::federation::{
        discovery::get_server_version,
        query::{get_profile_information, get_room_information},
    };
    use ruma::api::federation::{
        event::{get_event, get_missing_events, get_room_state_ids},
        membership::{create_join_event, prepare_join_event},
        transactions::send_transaction_message,
    };
    key_routes()
        .ruma::<get_server_version::v1::Request, _, _>(fed::version)
        .ruma::<ruma::api::federation::openid::get_openid_userinfo::v1::Request, _, _>(fed::openid_userinfo)
        .ruma::<get_profile_information::v1::Request, _, _>(fed::query_profile)
        .ruma::<get_room_information::v1::Request, _, _>(fed::query_directory)
        .ruma::<get_event::v1::Request, _, _>(fed::get_event)
        .ruma::<get_room_state_ids::v1::Request, _, _>(fed::state_ids)
        .ruma::<get_missing_events::v1::Request, _, _>(fed::missing_events)
        .ruma::<ruma::api::federation::backfill::get_backfill::v1::Request, _, _>(fed::backfill)
        .ruma::<ruma::api::federation::event::get_room_state::v1::Request, _, _>(fed::state)
        .ruma::<ruma::api::federation::keys::get_keys::v1::Request, _, _>(fed::user_keys_query)
        .ruma::<ruma::api::federation::keys::claim_keys::v1::Request, _, _>(fed::user_keys_claim)
        .ruma::<ruma::api::federation::device::get_devices::v1::Request, _, _>(fed::user_devices)
        .ruma::<ruma::api::federation::event::get_event_by_timestamp::v1::Request, _, _>(fed::timestamp_to_event)
        .ruma::<ruma::api::federation::authorization::get_event_authorization::v1::Request, _, _>(fed::event_auth)
        .ruma::<ruma::api::federation::directory::get_public_rooms::v1::Request, _, _>(fed::public_rooms)
        .ruma::<ruma::api::federation::directory::get_public_rooms_filtered::v1::Request, _, _>(fed::public_rooms_filtered)
        .ruma::<ruma::api::federation::space::get_hierarchy::v1::Request, _, _>(fed::hierarchy)
        .ruma::<ruma::api::federation::authenticated_media::get_content::v1::Request, _, _>(crate::federation::media::serve_download)
        .ruma::<ruma::api::federation::authenticated_media::get_content_thumbnail::v1::Request, _, _>(crate::federation::media::serve_thumbnail)
        .ruma::<prepare_join_event::v1::Request, _, _>(crate::federation::membership::make_join)
        .ruma::<create_join_event::v2::Request, _, _>(crate::federation::membership::send_join)
        .ruma::<ruma::api::federation::membership::create_invite::v2::Request, _, _>(crate::federation::membership::receive_invite)
        .ruma::<ruma::api::federation::membership::prepare_leave_event::v1::Request, _, _>(crate::federation::membership::make_leave)
        .ruma::<ruma::api::federation::membership::prepare_knock_event::v1::Request, _, _>(crate::federation::membership::make_knock)
        .ruma::<ruma::api::federation::membership::create_knock_event::v1::Request, _, _>(crate::federation::membership::send_knock)
        .ruma::<ruma::api::federation::membership::create_leave_event::v2::Request, _, _>(crate::federation::membership::send_leave)
        .ruma::<crate::federation::v1_membership::send_join::Request, _, _>(crate::federation::membership::send_join_v1)
        .ruma::<crate::federation::v1_membership::send_leave::Request, _, _>(crate::federation::membership::send_leave_v1)
        .ruma::<crate::federation::v1_membership::invite::Request, _, _>(crate::federation::membership::receive_invite_v1)
        .ruma::<send_transaction_message::v1::Request, _, _>(crate::federation::transactions::receive)
}

#[allow(deprecated)] // the legacy media endpoints are served on purpose
fn client_routes() -> Router<ClientApiState> {
    Router::new()
        .ruma::<get_supported_versions::Request, _, _>(discovery::versions)
        .ruma::<discover_homeserver::Request, _, _>(discovery::well_known)
        .ruma::<ruma::api::client::discovery::discover_support::Request, _, _>(discovery::support)
        .ruma::<ruma::api::client::voip::get_turn_server_info::v3::Request, _, _>(crate::client_api::voip::turn_server)
        .ruma::<get_capabilities::v3::Request, _, _>(discovery::capabilities)
        .ruma::<get_login_types::v3::Request, _, _>(session::login_types)
        .ruma::<login::v3::Request, _, _>(session::login)
        .ruma::<logout::v3::Request, _, _>(session::logout)
        .ruma::<logout_all::v3::Request, _, _>(session::logout_all)
        .ruma::<refresh_token::v3::Request, _, _>(session::refresh)
        .ruma::<whoami::v3::Request, _, _>(session::whoami)
        .ruma::<register::v3::Request, _, _>(session::register)
        .ruma::<get_username_availability::v3::Request, _, _>(session::username_available)
        .ruma::<ruma::api::client::account::check_registration_token_validity::v1::Request, _, _>(session::registration_token_validity)
        .route("/_synapse/admin/v1/register", get(session::shared_secret_nonce).post(session::shared_secret_register))
        // For load balancers and orchestrators: the process serves requests (as Synapse's).
        .route("/health", get(|| async { "OK" }))
        .ruma::<ruma::api::client::admin::get_user_info::v3::Request, _, _>(crate::client_api::admin::whois)
        .ruma::<ruma::api::client::admin::is_user_locked::v1::Request, _, _>(crate::client_api::admin::is_locked)
        .ruma::<ruma::api::client::admin::lock_user::v1::Request, _, _>(crate::client_api::admin::lock)
        .ruma::<ruma::api::client::admin::is_user_suspended::v1::Request, _, _>(crate::client_api::admin::is_suspended)
        .ruma::<ruma::api::client::admin::suspend_user::v1::Request, _, _>(crate::client_api::admin::suspend)
        .ruma::<crate::client_api::synapse_admin::server_version::Request, _, _>(crate::client_api::synapse_admin::get_server_version)
        .ruma::<crate::client_api::synapse_admin::users::list_users::Request, _, _>(crate::client_api::synapse_admin::users::get_users)
        .ruma::<crate::client_api::synapse_admin::users::user::Request, _, _>(crate::client_api::synapse_admin::users::get_user)
        .ruma::<crate::client_api::synapse_admin::users::put_user::Request, _, _>(crate::client_api::synapse_admin::users::put_user)
        .ruma::<crate::client_api::synapse_admin::users::deactivate::Request, _, _>(crate::client_api::synapse_admin::users::deactivate_user)
        .ruma::<crate::client_api::synapse_admin::users::reset_password::Request, _, _>(crate::client_api::synapse_admin::users::reset_password)
        .ruma::<crate::client_api::synapse_admin::users::whois::Request, _, _>(crate::client_api::synapse_admin::users::whois)
        .ruma::<crate::client_api::synapse_admin::users::devices::Request, _, _>(crate::client_api::synapse_admin::users::user_devices)
        .ruma::<crate::client_api::synapse_admin::users::joined_rooms::Request, _, _>(crate::client_api::synapse_admin::users::user_joined_rooms)
        .ruma::<crate::client_api::synapse_admin::rooms::list_rooms::Request, _, _>(crate::client_api::synapse_admin::rooms::list)
        .ruma::<crate::client_api::synapse_admin::rooms::room_details::Request, _, _>(crate::client_api::synapse_admin::rooms::details)
        .ruma::<crate::client_api::synapse_admin::rooms::room_members::Request, _, _>(crate::client_api::synapse_admin::rooms::members)
        .ruma::<crate::client_api::synapse_admin::rooms::room_state::Request, _, _>(crate::client_api::synapse_admin::rooms::state)
        .ruma::<crate::client_api::synapse_admin::rooms::delete_room_v1::Request, _, _>(crate::client_api::synapse_admin::rooms::delete_v1)
        .ruma::<crate::client_api::synapse_admin::rooms::delete_room_v2::Request, _, _>(crate::client_api::synapse_admin::rooms::delete_v2)
        .ruma::<crate::client_api::synapse_admin::rooms::room_delete_status::Request, _, _>(crate::client_api::synapse_admin::rooms::delete_status_of_room)
        .ruma::<crate::client_api::synapse_admin::rooms::delete_status::Request, _, _>(crate::client_api::synapse_admin::rooms::delete_status_by_id)
        .ruma::<crate::client_api::synapse_admin::rooms::get_block::Request, _, _>(crate::client_api::synapse_admin::rooms::block_status)
        .ruma::<crate::client_api::synapse_admin::rooms::put_block::Request, _, _>(crate::client_api::synapse_admin::rooms::set_block)
        .ruma::<crate::client_api::synapse_admin::reports::list_reports::Request, _, _>(crate::client_api::synapse_admin::reports::list)
        .ruma::<crate::client_api::synapse_admin::reports::report_details::Request, _, _>(crate::client_api::synapse_admin::reports::details)
        .ruma::<crate::client_api::synapse_admin::reports::delete_report::Request, _, _>(crate::client_api::synapse_admin::reports::delete)
        .ruma::<change_password::v3::Request, _, _>(account::change_password)
        .ruma::<deactivate::v3::Request, _, _>(account::deactivate)
        .ruma::<ruma::api::client::account::request_openid_token::v3::Request, _, _>(account::request_openid_token)
        .ruma::<ruma::api::client::user_directory::search_users::v3::Request, _, _>(crate::client_api::user_directory::search)
        .ruma::<ruma::api::client::search::search_events::v3::Request, _, _>(crate::client_api::search::search)
        .ruma::<get_devices::v3::Request, _, _>(account::list_devices)
        .ruma::<get_device::v3::Request, _, _>(account::get_device)
        .ruma::<update_device::v3::Request, _, _>(account::update_device)
        .ruma::<delete_device::v3::Request, _, _>(account::delete_device)
        .ruma::<delete_devices::v3::Request, _, _>(account::delete_devices)
        .ruma::<get_profile::v3::Request, _, _>(account::get_profile)
        .ruma::<get_display_name::v3::Request, _, _>(account::get_displayname)
        .ruma::<set_display_name::v3::Request, _, _>(account::set_displayname)
        .ruma::<get_avatar_url::v3::Request, _, _>(account::get_avatar_url)
        .ruma::<set_avatar_url::v3::Request, _, _>(account::set_avatar_url)
        .ruma::<create_room::v3::Request, _, _>(room_events::create_room)
        .ruma::<upgrade_room::v3::Request, _, _>(room_upgrade::upgrade)
        .ruma::<crate::client_api::legacy_sync::events::Request, _, _>(crate::client_api::legacy_sync::events)
        .ruma::<crate::client_api::legacy_sync::event_by_id::Request, _, _>(crate::client_api::legacy_sync::event_by_id)
        .ruma::<crate::client_api::legacy_sync::initial_sync::Request, _, _>(crate::client_api::legacy_sync::initial_sync)
        .ruma::<crate::client_api::legacy_sync::room_initial_sync::Request, _, _>(crate::client_api::legacy_sync::room_initial_sync)
        .ruma::<send_message_event::v3::Request, _, _>(room_events::send_message)
        .ruma_post_without_txn_id::<send_message_event::v3::Request, _, _>(room_events::send_message)
        .ruma::<send_state_event::v3::Request, _, _>(room_events::send_state)
        .ruma::<get_state_event_for_key::v3::Request, _, _>(room_events::get_state_event)
        .ruma::<get_state_events::v3::Request, _, _>(room_events::get_state)
        .ruma::<get_room_event::v3::Request, _, _>(room_events::get_event)
        .ruma::<get_message_events::v3::Request, _, _>(room_events::messages)
        .ruma::<join_room_by_id::v3::Request, _, _>(membership::join_by_id)
        .ruma::<join_room_by_id_or_alias::v3::Request, _, _>(membership::join_by_id_or_alias)
        .ruma::<knock_room::v3::Request, _, _>(membership::knock)
        .ruma::<invite_user::v3::Request, _, _>(membership::invite)
        .ruma::<leave_room::v3::Request, _, _>(membership::leave)
        .ruma::<kick_user::v3::Request, _, _>(membership::kick)
        .ruma::<ban_user::v3::Request, _, _>(membership::ban)
        .ruma::<unban_user::v3::Request, _, _>(membership::unban)
        .ruma::<forget_room::v3::Request, _, _>(membership::forget)
        .ruma::<joined_rooms::v3::Request, _, _>(membership::joined_rooms)
        .ruma::<joined_members::v3::Request, _, _>(membership::joined_members)
        .ruma::<get_member_events::v3::Request, _, _>(membership::members)
        .ruma::<redact_event::v3::Request, _, _>(relations::redact)
        .ruma_post_without_txn_id::<redact_event::v3::Request, _, _>(relations::redact)
        .ruma::<get_context::v3::Request, _, _>(relations::context)
        .ruma::<get_event_by_timestamp::v1::Request, _, _>(relations::timestamp_to_event)
        .ruma::<get_relating_events::v1::Request, _, _>(relations::relations)
        .ruma::<get_relating_events_with_rel_type::v1::Request, _, _>(relations::relations_with_type)
        .ruma::<get_relating_events_with_rel_type_and_event_type::v1::Request, _, _>(relations::relations_with_type_and_event_type)
        .ruma::<get_threads::v1::Request, _, _>(relations::threads)
        .ruma::<ruma::api::client::space::get_hierarchy::v1::Request, _, _>(crate::client_api::spaces::hierarchy)
        .ruma::<create_alias::v3::Request, _, _>(directory::create)
        .ruma::<get_alias::v3::Request, _, _>(directory::resolve)
        .ruma::<delete_alias::v3::Request, _, _>(directory::delete)
        .ruma::<aliases::v3::Request, _, _>(directory::room_aliases)
        .ruma::<get_room_visibility::v3::Request, _, _>(directory::get_visibility)
        .ruma::<set_room_visibility::v3::Request, _, _>(directory::set_visibility)
        .ruma::<get_public_rooms::v3::Request, _, _>(directory::public_rooms)
        .ruma::<get_public_rooms_filtered::v3::Request, _, _>(directory::public_rooms_filtered)
        .ruma::<set_global_account_data::v3::Request, _, _>(account_data::set_global)
        .ruma::<get_global_account_data::v3::Request, _, _>(account_data::get_global)
        .ruma::<set_room_account_data::v3::Request, _, _>(account_data::set_room)
        .ruma::<get_room_account_data::v3::Request, _, _>(account_data::get_room)
        .ruma::<get_tags::v3::Request, _, _>(account_data::get_tags)
        .ruma::<create_tag::v3::Request, _, _>(account_data::put_tag)
        .ruma::<delete_tag::v3::Request, _, _>(account_data::delete_tag)
        .ruma::<report_content::v3::Request, _, _>(account_data::report_event)
        .ruma::<report_room::v3::Request, _, _>(account_data::report_room)
        .ruma::<ruma::api::client::reporting::report_user::v3::Request, _, _>(account_data::report_user)
        .ruma::<sync_events::v3::Request, _, _>(sync::sync)
        .ruma::<sync_events::v5::Request, _, _>(sliding_sync::sliding_sync)
        .ruma::<crate::client_api::sliding_sync_v4::Request, _, _>(crate::client_api::sliding_sync_v4::sliding_sync)
        .ruma::<ruma::api::client::appservice::request_ping::v1::Request, _, _>(appservice::ping)
        .ruma::<ruma::api::client::appservice::set_room_visibility::v3::Request, _, _>(appservice::set_network_visibility)
        .ruma::<appservice::unlist_room::Request, _, _>(appservice::unlist_from_network)
        .ruma::<ruma::api::client::thirdparty::get_protocols::v3::Request, _, _>(appservice::protocols)
        .ruma::<ruma::api::client::thirdparty::get_protocol::v3::Request, _, _>(appservice::protocol_metadata)
        .ruma::<ruma::api::client::thirdparty::get_location_for_protocol::v3::Request, _, _>(appservice::locations_for_protocol)
        .ruma::<ruma::api::client::thirdparty::get_user_for_protocol::v3::Request, _, _>(appservice::users_for_protocol)
        .ruma::<ruma::api::client::thirdparty::get_location_for_room_alias::v3::Request, _, _>(appservice::locations_for_alias)
        .ruma::<ruma::api::client::thirdparty::get_user_for_user_id::v3::Request, _, _>(appservice::users_for_user_id)
        .ruma::<create_filter::v3::Request, _, _>(sync::create_filter)
        .ruma::<get_filter::v3::Request, _, _>(sync::get_filter)
        .ruma::<create_typing_event::v3::Request, _, _>(sync::typing)
        .ruma::<create_receipt::v3::Request, _, _>(sync::receipt)
        .ruma::<set_read_marker::v3::Request, _, _>(sync::read_markers)
        .ruma::<get_presence::v3::Request, _, _>(sync::get_presence)
        .ruma::<set_presence::v3::Request, _, _>(sync::set_presence)
        .ruma::<send_event_to_device::v3::Request, _, _>(sync::send_to_device)
        .ruma::<get_pushrules_all::v3::Request, _, _>(push::get_all)
        .ruma::<get_pushrules_global_scope::v3::Request, _, _>(push::get_global)
        .ruma::<get_pushrule::v3::Request, _, _>(push::get_rule)
        .ruma::<set_pushrule::v3::Request, _, _>(push::set_rule)
        .ruma::<delete_pushrule::v3::Request, _, _>(push::delete_rule)
        .ruma::<get_pushrule_enabled::v3::Request, _, _>(push::get_enabled)
        .ruma::<set_pushrule_enabled::v3::Request, _, _>(push::set_enabled)
        .ruma::<get_pushrule_actions::v3::Request, _, _>(push::get_actions)
        .ruma::<set_pushrule_actions::v3::Request, _, _>(push::set_actions)
        .ruma::<push::get_rules_of_kind::Request, _, _>(push::get_kind)
        .route("/_matrix/client/v3/pushrules/", put(push::malformed_path).post(push::malformed_path).delete(push::malformed_path))
        .route("/_matrix/client/v3/pushrules/global/{kind}/", put(push::malformed_path).post(push::malformed_path).delete(push::malformed_path))
        .route("/_matrix/client/r0/pushrules/", put(push::malformed_path).post(push::malformed_path).delete(push::malformed_path))
        .route("/_matrix/client/r0/pushrules/global/{kind}/", put(push::malformed_path).post(push::malformed_path).delete(push::malformed_path))
        .route("/_matrix/client/v3/pushrules/{*rest}", any(push::malformed_path))
        .route("/_matrix/client/r0/pushrules/{*rest}", any(push::malformed_path))
        .ruma::<get_pushers::v3::Request, _, _>(push::get_pushers)
        .ruma::<set_pusher::v3::Request, _, _>(push::set_pusher)
        .ruma::<get_notifications::v3::Request, _, _>(push::notifications)
        .ruma::<upload_keys::v3::Request, _, _>(keys::upload)
        .ruma::<get_keys::v3::Request, _, _>(keys::query)
        .ruma::<claim_keys::v3::Request, _, _>(keys::claim)
        .ruma::<get_key_changes::v3::Request, _, _>(keys::changes)
        .ruma::<upload_signing_keys::v3::Request, _, _>(keys::upload_signing_keys)
        .ruma::<upload_signatures::v3::Request, _, _>(keys::upload_signatures)
        .ruma::<create_backup_version::v3::Request, _, _>(keys::create_backup)
        .ruma::<get_latest_backup_info::v3::Request, _, _>(keys::latest_backup)
        .ruma::<get_backup_info::v3::Request, _, _>(keys::backup_info)
        .ruma::<update_backup_version::v3::Request, _, _>(keys::update_backup)
        .ruma::<delete_backup_version::v3::Request, _, _>(keys::delete_backup)
        .ruma::<add_backup_keys::v3::Request, _, _>(keys::put_keys)
        .ruma::<add_backup_keys_for_room::v3::Request, _, _>(keys::put_room_keys)
        .ruma::<add_backup_keys_for_session::v3::Request, _, _>(keys::put_session_key)
        .ruma::<get_backup_keys::v3::Request, _, _>(keys::get_keys)
        .ruma::<get_backup_keys_for_room::v3::Request, _, _>(keys::get_room_keys)
        .ruma::<get_backup_keys_for_session::v3::Request, _, _>(keys::get_session_key)
        .ruma::<delete_backup_keys::v3::Request, _, _>(keys::delete_keys)
        .ruma::<delete_backup_keys_for_room::v3::Request, _, _>(keys::delete_room_keys)
        .ruma::<delete_backup_keys_for_session::v3::Request, _, _>(keys::delete_session_key)
        .ruma::<create_content::v3::Request, _, _>(media::upload)
        .ruma::<create_mxc_uri::v1::Request, _, _>(media::create)
        .ruma::<create_content_async::v3::Request, _, _>(media::upload_to)
        .ruma::<get_media_config::v1::Request, _, _>(media::config)
        .ruma::<ruma::api::client::authenticated_media::get_media_preview::v1::Request, _, _>(media::preview_url)
        .ruma::<legacy_media::get_media_preview::v3::Request, _, _>(media::legacy_preview_url)
        .ruma::<get_content::v1::Request, _, _>(media::download)
        .ruma::<get_content_as_filename::v1::Request, _, _>(media::download_as)
        .ruma::<get_content_thumbnail::v1::Request, _, _>(media::thumbnail)
        .ruma::<legacy_media::get_content::v3::Request, _, _>(media::legacy_get)
        .ruma::<legacy_media::get_content_as_filename::v3::Request, _, _>(media::legacy_get_as)
        .ruma::<legacy_media::get_content_thumbnail::v3::Request, _, _>(media::legacy_thumbnail)
        .ruma::<legacy_media::get_media_config::v3::Request, _, _>(media::legacy_config)
}

/// Says in a `Server-Timing` header how long weft took to answer (up to the response head,
/// long-poll waits included), so browsers' developer tools and the load tool can tell server
/// time from network time.
async fn server_timing(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let value = format!("app;dur={:.3}", started.elapsed().as_secs_f64() * 1000.0);
    if let Ok(value) = header::HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::HeaderName::from_static("server-timing"), value);
    }
    response
}

/// Axum's own rejections (body too large, bad path) become Matrix errors.
async fn json_errors_for_rejections(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || response.status().is_success() {
        return response;
    }
    match response.status() {
        http::StatusCode::PAYLOAD_TOO_LARGE => MatrixError::too_large("Request body too large").into_response(),
        http::StatusCode::NOT_FOUND => MatrixError::unrecognized("Unrecognized request").into_response(),
        http::StatusCode::METHOD_NOT_ALLOWED => MatrixError::method_not_allowed().into_response(),
        status if status.is_client_error() => {
            MatrixError::new(status, "M_UNKNOWN", status.canonical_reason().unwrap_or("Bad request")).into_response()
        }
        _ => response,
    }
}

/// A server that is up and serving.
pub struct RunningServer {
    /// The first listener serving the client API (else the first listener).
    pub addr: SocketAddr,
    /// The first listener serving the federation API, when federation is enabled.
    pub federation_addr: Option<SocketAddr>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tls_handles: Vec<axum_server::Handle<SocketAddr>>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    db: Db,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, closes the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        for handle in &self.tls_handles {
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        }
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.await??;
        }
        // In-flight requests (and their writes) have finished; flush and close.
        tokio::time::timeout(Duration::from_secs(10), self.db.close()).await.ok();
        Ok(())
    }
}

/// The listeners to open: the configured ones, or today's two (client API in plain HTTP on
/// `listen`, federation over TLS on `federation.listen`).
fn planned_listeners(config: &Config) -> Vec<ListenerConfig> {
    if !config.listeners.is_empty() {
        return config.listeners.clone();
    }
    let mut listeners = vec![ListenerConfig { bind: config.listen, tls_cert: String::new(), tls_key: String::new(), resources: vec![Resource::Client] }];
    if config.federation.enabled {
        listeners.push(ListenerConfig {
            bind: config.federation.listen,
            tls_cert: config.federation.tls_cert.clone(),
            tls_key: config.federation.tls_key.clone(),
            resources: vec![Resource::Federation],
        });
    }
    listeners
}

/// Binds and serves in the background.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    config.check_listeners()?;
    let services = Services::build(config).await?;
    let planned = planned_listeners(&services.config);
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::new();
    let mut tls_handles = Vec::new();
    let mut tasks = Vec::new();
    for (index, listener) in planned.iter().enumerate() {
        let app = services.router_for(listener).into_make_service_with_connect_info::<SocketAddr>();
        // The default federation listener makes its own certificate when none is configured.
        let default_federation = services.config.listeners.is_empty() && index == 1;
        let tls = if default_federation {
            Some(crate::federation::tls::listener_config(&services.config).await?)
        } else if listener.is_tls() {
            Some(crate::federation::tls::rustls_config(&listener.tls_cert, &listener.tls_key).await?)
        } else {
            None
        };
        let bound = std::net::TcpListener::bind(listener.bind).with_context(|| format!("cannot listen on {}", listener.bind))?;
        bound.set_nonblocking(true)?;
        let addr = bound.local_addr()?;
        addrs.push(addr);
        match tls {
            Some(tls) => {
                let handle = axum_server::Handle::new();
                let server = axum_server::from_tcp_rustls(bound, tls)?.handle(handle.clone());
                tls_handles.push(handle);
                tasks.push(tokio::spawn(async move { server.serve(app).await }));
            }
            None => {
                // Responses go out in more than one write; with Nagle's algorithm on, the
                // second waits for the client's delayed ACK (40 ms on Linux).
                let bound = axum::serve::ListenerExt::tap_io(TcpListener::from_std(bound)?, |stream: &mut tokio::net::TcpStream| {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "TCP_NODELAY not set");
                    }
                });
                let mut stop = shutdown_rx.clone();
                tasks.push(tokio::spawn(async move {
                    axum::serve(bound, app)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|stopping| *stopping).await;
                        })
                        .await
                }));
            }
        }
        let names: Vec<&str> = listener.resources.iter().map(|r| match r {
            Resource::Client => "client",
            Resource::Federation => "federation",
        }).collect();
        tracing::info!(%addr, tls = listener.is_tls() || default_federation, resources = ?names, "listening");
    }
    services.presence.spawn_timeouts();
    TransactionSender::new(
        services.db.clone(),
        services.rooms.clone(),
        services.appservices.clone(),
        services.appservice_client.clone(),
        services.appservice_ephemeral.clone(),
    )
    .spawn(shutdown_rx.clone());
    services.media.spawn_remote_expiry();
    if services.config.federation.enabled {
        services.federation.spawn_sender(Duration::from_millis(services.config.federation.max_retry_delay_ms));
    }
    let first_serving = |resource| planned.iter().position(|l| l.serves(resource)).map(|i| addrs[i]);
    let addr = first_serving(Resource::Client).unwrap_or(addrs[0]);
    let federation_addr = if services.config.federation.enabled { first_serving(Resource::Federation) } else { None };
    Ok(RunningServer { addr, federation_addr, shutdown, tls_handles, tasks, db: services.db.clone() })
}
