//! `truststream migrate`: builds the database and storage of two profiles
//! and hands them to `truststream-migrate`, which does the work.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use truststream_migrate::{Only, Options, ProgressMode, Side};
use truststream_runtime::{Config, ConfigSources, Interface, Registries};

/// Arguments of `truststream migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The profile to copy from.
    #[arg(long, value_name = "PROFILE")]
    from: String,
    /// The profile to copy to.
    #[arg(long, value_name = "PROFILE")]
    to: String,
    /// Only the database (`db`) or only the storage (`storage`).
    #[arg(long, value_name = "db|storage")]
    only: Option<String>,
    /// These tables only (comma-separated); required when the source
    /// database cannot list its tables (memory, Supabase REST).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    tables: Option<Vec<String>>,
    /// These buckets only (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "X,Y")]
    buckets: Option<Vec<String>>,
    /// Read both sides and print the plan and what the target cannot hold;
    /// write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Continue an interrupted run from its checkpoints.
    #[arg(long)]
    resume: bool,
    /// Only compare the two sides (row counts and digests, object lists).
    #[arg(long)]
    verify_only: bool,
    /// The checkpoint file (default: `truststream-migrate-<from>-<to>.json`
    /// next to the configuration file, or in the current directory).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Rows per batch.
    #[arg(long, value_name = "N", default_value_t = truststream_migrate::DEFAULT_BATCH)]
    batch: usize,
    /// Tables copied at once (within one foreign-key level).
    #[arg(long, value_name = "N", default_value_t = 2)]
    parallel: usize,
    /// Differences listed per table or bucket.
    #[arg(long, value_name = "N", default_value_t = truststream_migrate::DEFAULT_MAX_DIFFERENCES)]
    max_differences: usize,
    /// Progress as plain lines even on a terminal.
    #[arg(long)]
    plain: bool,
    /// After the copy, apply the source database's changes to the target
    /// until SIGINT (Ctrl-C), SIGTERM or the --stop-file appears; then
    /// apply what is still arriving and verify. Changes are subscribed to
    /// before the copy starts. With --follow, SIGINT and SIGTERM are
    /// handled from the start: one received during the copy stops the
    /// following as soon as the copy ends (SIGKILL ends the copy itself).
    #[arg(long)]
    follow: bool,
    /// With --follow: stop following once this file exists (checked every
    /// 200 ms); it is not removed.
    #[arg(long, value_name = "FILE", requires = "follow")]
    stop_file: Option<PathBuf>,
}

/// Completes on SIGINT, SIGTERM, or once `stop_file` exists.
fn follow_stop(stop_file: Option<PathBuf>) -> impl std::future::Future<Output = ()> {
    let signal = super::shutdown_signal();
    async move {
        let file = async {
            match stop_file {
                Some(f) => {
                    while !f.exists() {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = signal => {}
            () = file => {}
        }
    }
}

/// The configuration of `profile` without the database's `cache` layer (a
/// bulk copy reads every row once: caching them only costs memory).
fn profile_config(sources: &ConfigSources, profile: &str) -> truststream_core::Result<Config> {
    let mut config = sources.clone().profile(profile.to_string()).load()?;
    let section = config.section(Interface::Database).clone();
    if section.layers().contains_key("cache") {
        let mut layers = section.layers().clone();
        layers.remove("cache");
        config.set_section(Interface::Database, section.with_layers(layers));
    }
    Ok(config)
}

async fn side(
    registries: &Arc<Registries>,
    config: &Config,
    db: bool,
    storage: bool,
) -> truststream_core::Result<Side> {
    Ok(Side {
        db: if db {
            Some(registries.build_database(config).await?)
        } else {
            None
        },
        storage: if storage {
            Some(registries.build_storage(config).await?)
        } else {
            None
        },
    })
}

fn default_state(config_file: Option<&str>, from: &str, to: &str) -> PathBuf {
    let dir = config_file
        .and_then(|f| Path::new(f).parent())
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    dir.join(format!("truststream-migrate-{from}-{to}.json"))
}

/// Runs `truststream migrate`: exit 0 when the copy (or the check) found
/// both sides equal, 1 on a difference, a blocking issue or a failure.
pub async fn run(sources: ConfigSources, args: MigrateArgs) -> ExitCode {
    match run_inner(sources, args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.display_chain());
            ExitCode::FAILURE
        }
    }
}

async fn run_inner(
    sources: ConfigSources,
    args: MigrateArgs,
) -> truststream_core::Result<ExitCode> {
    let only = args.only.as_deref().map(str::parse::<Only>).transpose()?;
    let from = profile_config(&sources, &args.from)?;
    let to = profile_config(&sources, &args.to)?;
    let db = only != Some(Only::Storage);
    let storage = only != Some(Only::Database);
    let registries = Arc::new(Registries::compiled_in());
    let source = side(&registries, &from, db, storage).await?;
    let target = side(&registries, &to, db, storage).await?;
    let state = args
        .state
        .unwrap_or_else(|| default_state(from.file(), &args.from, &args.to));
    let options = Options {
        only,
        tables: args.tables,
        buckets: args.buckets,
        dry_run: args.dry_run,
        resume: args.resume,
        verify_only: args.verify_only,
        verify: true,
        state_path: Some(state),
        batch: args.batch,
        parallel: args.parallel,
        max_differences: args.max_differences,
        progress: if args.plain {
            ProgressMode::Lines
        } else {
            ProgressMode::Auto
        },
        follow: args.follow,
        ..Options::default()
    };
    println!(
        "migrate: {} -> {}{}",
        args.from,
        args.to,
        if args.dry_run {
            " (dry run)"
        } else if args.verify_only {
            " (verify only)"
        } else if args.follow {
            " (then following the source's changes: stop with Ctrl-C, SIGTERM or --stop-file)"
        } else {
            ""
        }
    );
    // Signal handlers only with --follow: installing them replaces the
    // default action, and a plain copy must stay killable by Ctrl-C.
    let stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = if args.follow {
        Box::pin(follow_stop(args.stop_file))
    } else {
        Box::pin(std::future::pending())
    };
    let summary = truststream_migrate::run_until(&source, &target, &options, stop).await;
    for s in [&source, &target] {
        if let Some(d) = &s.db {
            let _ = d.disconnect().await;
        }
    }
    let summary = summary?;
    print!("{summary}");
    Ok(if summary.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
