//! The load tool's smoke run: a small version of every scenario against an in-process
//! server, checking that the run was correct (every send acknowledged, every message
//! delivered to every receiver, every long-poll held, pagination saw every message).
//! Timings are printed, never asserted.

mod common;

use common::TestServer;
use weft::bench::{run, BenchArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_correctly() {
    // The bench's bridge, registered before the server starts.
    let bridge_port = common::free_port();
    let registration = tempfile::NamedTempFile::new().unwrap();
    let settings = weft::bench::appservice::BridgeSettings::on_port(bridge_port);
    std::fs::write(registration.path(), weft::bench::appservice::registration_yaml(&settings)).unwrap();
    let path = registration.path().to_owned();
    let server = TestServer::start_with(|config| config.app_service_config_files = vec![path]).await;
    let args = BenchArgs {
        url: server.base.clone(),
        spawn: None,
        server_pid: Some(std::process::id()),
        label: "smoke".into(),
        registrations: 3,
        register_concurrency: 2,
        senders: 4,
        messages: 25,
        receivers: 5,
        deliveries: 10,
        idle: 200,
        passes: 1,
        sliding_rooms: 30,
        sliding_rounds: 5,
        search_messages: 300,
        search_rounds: 3,
        max_seconds: 60,
        appservice_port: Some(bridge_port),
        appservice_registration: None,
        appservice_messages: 60,
        only: Vec::new(),
        json: None,
    };
    let report = run(args).await.expect("the run completes");
    println!("{}", report.table());
    assert!(report.failures().is_empty(), "{:?}", report.failures());
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name).collect();
    assert_eq!(names, ["register", "login", "send_one_room", "send_direct_rooms", "delivery", "idle_long_polls", "pagination", "sliding_sync_first_page", "sliding_sync_incremental", "search", "appservice"]);
    let bridged = report.scenarios.iter().find(|s| s.name == "appservice").unwrap();
    assert_eq!(bridged.operations, 60);
    let sent = report.scenarios.iter().find(|s| s.name == "send_one_room").unwrap();
    assert_eq!(sent.operations, 100);
    let delivery = report.scenarios.iter().find(|s| s.name == "delivery").unwrap();
    assert_eq!(delivery.operations, 50);
    let idle = report.scenarios.iter().find(|s| s.name == "idle_long_polls").unwrap();
    assert_eq!(idle.operations, 200);
    server.stop().await;
}
