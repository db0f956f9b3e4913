use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use weft::{config::Config, server};

#[derive(Parser)]
#[command(name = "weft", version, about = "A federated Matrix homeserver")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver.
    Serve {
        /// TOML config file; without it, defaults plus WEFT_* environment variables.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a commented default configuration.
    GenerateConfig,
    /// Create a user account.
    RegisterUser {
        /// The localpart (e.g. `alice` for @alice:server).
        name: String,
        #[arg(long)]
        admin: bool,
        /// Prompted for when not given.
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load-test a homeserver (this one or any other) through the Client-Server API.
    Bench(weft::bench::BenchArgs),
    /// Copy this server's SQLite database into a new, empty PostgreSQL database (stop the
    /// server first), then point `database.url` at PostgreSQL.
    MigrateDb {
        /// The SQLite database, e.g. sqlite://./weft-data/weft.db.
        #[arg(long)]
        from: String,
        /// The empty PostgreSQL database, e.g. postgres://weft@localhost/weft.
        #[arg(long)]
        to: String,
    },
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
}

/// glibc adapts its mmap threshold upwards once large blocks are freed (argon2's 19 MiB per
/// hash pushes it there) and then keeps such blocks in its arenas for good; a fixed
/// threshold hands them back to the OS when freed, so RSS returns to idle after bursts.
fn release_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> std::process::ExitCode {
    release_large_allocations();
    let result = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(anyhow::Error::from).and_then(|rt| rt.block_on(run()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line naming what is at fault, with its causes; an operator's error, not a
            // crash, so no backtrace.
            eprintln!("weft: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::GenerateConfig => {
            print!("{}", weft::config::DEFAULT_CONFIG_TOML);
            Ok(())
        }
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            init_logging(&config);
            tracing::info!(server_name = %config.server_name, data_dir = %config.data_dir.display(), "starting weft");
            let running = server::start(config).await?;
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight requests");
            running.stop().await?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Bench(args) => {
            tracing_subscriber::fmt().with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))).init();
            let report = weft::bench::run(args).await?;
            print!("{}", report.table());
            let failures = report.failures();
            anyhow::ensure!(failures.is_empty(), "the run was not correct: {}", failures.join("; "));
            Ok(())
        }
        Command::MigrateDb { from, to } => {
            tracing_subscriber::fmt().with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"))).init();
            let started = std::time::Instant::now();
            let copied = weft::migrate_db::migrate(&weft::storage::DbOptions::new(from), &weft::storage::DbOptions::new(&to), |table, rows| {
                println!("{table}: {rows} rows");
            })
            .await?;
            let total: i64 = copied.values().sum();
            println!(
                "copied {total} rows in {} tables to {} in {:.1} s; row counts verified. Set database.url to it and start weft.",
                copied.len(),
                weft::storage::redacted_url(&to),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::RegisterUser { name, admin, password, config } => {
            let config = Config::load(config.as_deref())?;
            init_logging(&config);
            let password = match password {
                Some(p) => p,
                None => {
                    let first = rpassword::prompt_password("Password: ").context("reading password")?;
                    let second = rpassword::prompt_password("Confirm password: ").context("reading password")?;
                    anyhow::ensure!(first == second, "passwords do not match");
                    first
                }
            };
            anyhow::ensure!(!password.is_empty(), "password must not be empty");
            let services = server::Services::build(config).await?;
            let user_id = services.accounts.local_user_id(&name.to_lowercase()).map_err(|e| anyhow::anyhow!(e.message))?;
            services.accounts.create_user(&user_id, Some(&password), admin).await.map_err(|e| anyhow::anyhow!(e.message))?;
            println!("Created {user_id}{}", if admin { " (admin)" } else { "" });
            services.db.close().await;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
