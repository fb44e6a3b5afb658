//! `truststream`: check, health and configuration of the configured providers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod jobs_cli;

/// mimalloc: allocation-heavy commands (`migrate`, `serve`) spend far less
/// time in the allocator than with glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use truststream_runtime::{
    CompatibilityReport, Config, ConfigSources, HealthReport, Registries, DEFAULT_HEALTH_DEADLINE,
};

/// TrustStream: report on the providers chosen by configuration.
///
/// Configuration layers: built-in defaults < truststream.toml (profile
/// sections) < TRUSTSTREAM_* environment variables (nested with `__`).
#[derive(Debug, Parser)]
#[command(name = "truststream", version)]
struct Cli {
    /// Profile to use (overrides TRUSTSTREAM_PROFILE): default, development,
    /// staging, production, or one the file defines.
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// Configuration file (overrides TRUSTSTREAM_CONFIG and ./truststream.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Format of the log lines written to stderr (which lines: RUST_LOG,
    /// default `warn`, `info` for `serve`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event (timestamp, level, target, fields, spans).
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per interface: provider and version, its layers (outermost first),
    /// capabilities, health. Exit 1 if a provider or a layer fails to build
    /// (an unknown layer or a bad value names its key) or a provider is
    /// unhealthy.
    Check {
        /// Print the report as JSON: profile, ok, and per interface (then
        /// jobs) type, provider, layers (outermost first), capabilities,
        /// health and error.
        #[arg(long)]
        json: bool,
    },
    /// Every configured service checked in parallel, each within the
    /// deadline: status, response time and message per service, and the
    /// overall status (healthy when all are, unhealthy when none serves,
    /// degraded otherwise). Exit 1 if any service is unhealthy.
    Health {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// How long each service has to answer (a service that does not is
        /// unhealthy: "no answer within N ms").
        #[arg(long, value_name = "MS", default_value_t = DEFAULT_HEALTH_DEADLINE.as_millis() as u64)]
        deadline_ms: u64,
    },
    /// The metrics of a short self-test run: builds the configured database
    /// and storage with the `metrics` layer on, writes, reads, updates and
    /// deletes a few rows in a scratch table (created and dropped) and a
    /// few objects under a scratch key (removed), and prints per operation
    /// the calls, errors and latency p50/p95/p99/max. Exit 1 if a provider
    /// cannot be built or the run fails. The stats of a running process
    /// will be served by the gateway at /metrics (a separate issue).
    #[cfg(feature = "layer-metrics")]
    Stats {
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
        /// Rows (and objects) the run writes.
        #[arg(long, value_name = "N", default_value_t = truststream_runtime::stats::DEFAULT_STATS_ROWS)]
        rows: usize,
    },
    /// The resolved configuration (JSON), each provider's defaults filled
    /// in (the SQLite path, pool sizes), secrets redacted.
    Config,
    /// Copies the database and the storage of one profile to another
    /// (`--from`, `--to`): schema first (what the target cannot hold is
    /// reported before anything is written), rows in primary-key batches,
    /// objects streamed, then both sides verified (counts, digests, object
    /// lists). Checkpoints go to a state file, so `--resume` continues an
    /// interrupted run. Exit 1 on any difference or blocking issue.
    #[cfg(feature = "migrate")]
    Migrate(migrate_cli::MigrateArgs),
    /// The configured job queue (`[<profile>.jobs]`): list, inspect, retry a
    /// dead job, cancel a queued one, stats. Exit 0 done, 1 the provider or
    /// the store failed, 2 bad arguments, 3 no such job, 4 the job's state
    /// does not allow the action.
    Jobs {
        #[command(subcommand)]
        command: jobs_cli::JobsCommand,
    },
    /// Serves Supabase's HTTP and WebSocket APIs over the configured
    /// providers: /rest/v1, /auth/v1, /storage/v1, /realtime/v1/websocket,
    /// /health and /metrics, so @supabase/supabase-js works against it
    /// unchanged. Prints the URL and the anon and service-role keys
    /// (generated once and kept in the data directory, or taken from
    /// [serve] in the configuration). Stops gracefully on SIGTERM/SIGINT.
    #[cfg(feature = "serve")]
    Serve {
        /// Address to listen on (overrides serve.bind; default 127.0.0.1:54321).
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "serve")]
    let serving = matches!(cli.command, Command::Serve { .. });
    #[cfg(not(feature = "serve"))]
    let serving = false;
    init_tracing(cli.log_format, serving);
    let mut sources = ConfigSources::from_process();
    if let Some(p) = &cli.profile {
        sources = sources.profile(p.clone());
    }
    if let Some(f) = &cli.config {
        sources = sources.file(f.clone());
    }
    let config = match sources.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", e.display_chain());
            return ExitCode::FAILURE;
        }
    };
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    match cli.command {
        Command::Config => print_config(&config),
        #[cfg(feature = "migrate")]
        Command::Migrate(args) => run(|| migrate_cli::run(sources.clone(), args)),
        Command::Jobs { command } => run(|| jobs_cli::run(&config, command)),
        #[cfg(feature = "serve")]
        Command::Serve { bind } => run(|| async move { serve(&config, bind.as_deref()).await }),
        Command::Check { json } => run(|| async move {
            let report = CompatibilityReport::check(&registries(), &config).await;
            if json {
                match serde_json::to_string_pretty(&report.to_json()) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot render the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                return if report.is_ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
            // Each failure is printed once: on stderr, not also in the
            // report on stdout.
            print!("{}", report.render(false));
            if report.is_ok() {
                return ExitCode::SUCCESS;
            }
            for i in report.interfaces.iter().filter(|i| !i.is_ok()) {
                eprintln!("error: {}: {}", i.interface, i.health_line());
            }
            if !report.jobs.is_ok() {
                eprintln!("error: jobs: {}", report.jobs.health_line());
            }
            ExitCode::FAILURE
        }),
        Command::Health { json, deadline_ms } => run(|| async {
            let deadline = Duration::from_millis(deadline_ms);
            let report = HealthReport::check(&registries(), &config, deadline).await;
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot render the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.table());
            }
            if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        #[cfg(feature = "layer-metrics")]
        Command::Stats { json, rows } => run(|| async {
            let run = match truststream_runtime::stats::self_test(
                Registries::compiled_in(),
                &config,
                rows,
            )
            .await
            {
                Ok(run) => run,
                Err(e) => {
                    eprintln!("error: {}", e.display_chain());
                    return ExitCode::FAILURE;
                }
            };
            if json {
                match serde_json::to_string_pretty(&run) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot render the stats: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", run.table());
            }
            match &run.failure {
                None => ExitCode::SUCCESS,
                Some(f) => {
                    eprintln!("error: the self-test run failed: {f}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

#[cfg(feature = "serve")]
async fn serve(config: &Config, bind: Option<&str>) -> ExitCode {
    use truststream_runtime::serve;
    let prepared = match serve::prepare(config, bind) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", e.display_chain());
            return ExitCode::FAILURE;
        }
    };
    let embedded_auth = prepared.embedded_auth;
    let (server, services) = match serve::bind(&registries(), prepared).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", e.display_chain());
            return ExitCode::FAILURE;
        }
    };
    let shutdown = shutdown_signal();
    let url = server.url().to_string();
    let ws = url.replacen("http", "ws", 1);
    println!("TrustStream serve (profile {})", config.profile());
    println!("         API URL: {url}");
    println!("        REST URL: {url}/rest/v1");
    println!("    Realtime URL: {ws}/realtime/v1/websocket");
    println!("        anon key: {}", server.keys().anon());
    println!("service_role key: {}", server.keys().service_role());
    println!(
        "        database: {}   storage: {}   auth: {}{}",
        services.db.info().name,
        services.storage.info().name,
        services.auth.as_ref().map_or("none", |a| a.info().name),
        if embedded_auth {
            " (embedded: auth.type was \"none\")"
        } else {
            ""
        }
    );
    let result = server.run(shutdown).await;
    // Every provider, in the runtime's order: realtime, jobs (batched
    // completions committed), auth, then the database's pools.
    if let Err(e) = services.close().await {
        eprintln!("warning: {}", e.display_chain());
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.display_chain());
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: a signal that arrives right after the
/// server printed its URL stops it gracefully instead of killing it
/// (and `truststream migrate --follow` stops following).
#[cfg(any(feature = "serve", feature = "migrate"))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn recv(s: Option<Signal>) {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                () = recv(term) => {}
                () = recv(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(feature = "migrate")]
mod migrate_cli;

fn registries() -> Arc<Registries> {
    Arc::new(Registries::compiled_in())
}

/// Runs `main` on a multi-threaded async runtime.
fn run<F, Fut>(main: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(main()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the log subscriber: events at the level RUST_LOG selects
/// (default `warn`, `info` for `serve`), as text or JSON lines, on stderr
/// (stdout is for the command's output).
fn init_tracing(format: LogFormat, serve: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if serve { "info" } else { "warn" };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!(
                "warning: RUST_LOG {:?} is not a valid filter ({e}); using {default:?}",
                truststream_core::echo(&v).to_string()
            );
            EnvFilter::new(default)
        }),
        _ => EnvFilter::new(default),
    };
    // A span's close is an event too: the providers' and layers' spans
    // (`truststream.call` of the metrics layer, at debug) show up with
    // their fields and timings.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

fn print_config(config: &Config) -> ExitCode {
    let mut out = serde_json::Map::new();
    out.insert("profile".into(), config.profile().into());
    out.insert(
        "file".into(),
        config.file().map_or(serde_json::Value::Null, Into::into),
    );
    if let serde_json::Value::Object(sections) = config.resolved_redacted() {
        out.extend(sections);
    }
    match serde_json::to_string_pretty(&serde_json::Value::Object(out)) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot render the configuration: {e}");
            ExitCode::FAILURE
        }
    }
}
