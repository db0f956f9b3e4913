//! The `weft` binary's commands: generate-config, register-user, serve with a config file
//! and environment overrides, graceful shutdown on SIGTERM.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{free_port, wait_ready};
use serde_json::{json, Value};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

#[test]
fn generate_config_prints_a_commented_default() {
    let output = Command::new(WEFT).arg("generate-config").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("server_name = \"localhost\""));
    assert!(text.lines().any(|l| l.starts_with('#')));
    let parsed: toml::Value = toml::from_str(&text).expect("valid TOML");
    assert_eq!(parsed["listen"].as_str(), Some("127.0.0.1:8008"));
}

#[tokio::test]
async fn register_user_then_serve_from_config_file_with_env_override() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config_path = dir.path().join("weft.toml");
    std::fs::write(
        &config_path,
        format!(
            "server_name = \"chat.example\"\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:1\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();

    let created = Command::new(WEFT)
        .args(["register-user", "root", "--admin", "--password", "s3cret", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    assert!(String::from_utf8_lossy(&created.stdout).contains("@root:chat.example"));
    // Twice is an error, not a crash.
    let again = Command::new(WEFT)
        .args(["register-user", "root", "--password", "x", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!again.status.success());

    // The environment overrides the file's listen address.
    let mut child = Command::new(WEFT)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("WEFT_LISTEN", format!("127.0.0.1:{port}"))
        .env("WEFT_FEDERATION__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let login: Value = reqwest::Client::new()
        .post(format!("{base}/_matrix/client/v3/login"))
        .json(&json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "root" }, "password": "s3cret" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["user_id"], "@root:chat.example");

    // SIGTERM: a clean, successful exit.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let output = Command::new(WEFT).args(["serve", "--config", "/nonexistent/weft.toml"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}

/// Start-up errors are one line naming the file or address at fault, without a backtrace
/// (even with RUST_BACKTRACE set, as it is on many developer machines).
#[test]
fn start_up_errors_name_what_is_at_fault_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |envs: &[(&str, String)]| {
        let output = Command::new(WEFT)
            .arg("serve")
            .env("WEFT_DATA_DIR", dir.path())
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LOG", "error")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("backtrace") && !stderr.contains("Caused by"), "{stderr}");
        stderr
    };
    let missing_ca = serve(&[("WEFT_LISTEN", "127.0.0.1:0".into()), ("WEFT_FEDERATION__EXTRA_CA_FILES", "[\"/nonexistent/ca.pem\"]".into())]);
    assert!(missing_ca.contains("/nonexistent/ca.pem"), "{missing_ca}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let in_use = serve(&[("WEFT_LISTEN", address.clone())]);
    assert!(in_use.contains(&address), "{in_use}");

    // A PostgreSQL that does not answer (nothing listens on the port): named, with the
    // password left out.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = serve(&[
        ("WEFT_LISTEN", "127.0.0.1:0".into()),
        ("WEFT_DATABASE__URL", format!("postgres://weft:hunter2@127.0.0.1:{closed}/weft")),
        ("WEFT_DATABASE__CONNECT_TIMEOUT_SECS", "2".into()),
    ]);
    assert!(unreachable.contains("connecting to PostgreSQL at postgres://weft:***@127.0.0.1"), "{unreachable}");
    assert!(!unreachable.contains("hunter2"), "{unreachable}");
    let unknown = serve(&[("WEFT_LISTEN", "127.0.0.1:0".into()), ("WEFT_DATABASE__URL", "mysql://x@localhost/weft".into())]);
    assert!(unknown.contains("unsupported database url"), "{unknown}");
}
