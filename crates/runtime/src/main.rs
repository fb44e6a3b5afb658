//! `truststream`: check, health and configuration of the configured providers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use truststream_runtime::{CompatibilityReport, Config, ConfigSources, Registries};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per interface: provider and version, capabilities, health. Exit 1 if
    /// a provider fails to build or is unhealthy.
    Check,
    /// One health line per service. Exit 1 if any is unhealthy.
    Health,
    /// The resolved configuration (JSON), secrets redacted.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match cli.command {
        Command::Config => print_config(&config),
        Command::Check | Command::Health => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let report = rt.block_on(CompatibilityReport::check(
                &Registries::compiled_in(),
                &config,
            ));
            if matches!(cli.command, Command::Check) {
                print!("{report}");
            } else {
                print!("{}", report.health_lines());
            }
            if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                for i in report.interfaces.iter().filter(|i| !i.is_ok()) {
                    eprintln!("error: {}: {}", i.interface, i.health_line());
                }
                ExitCode::FAILURE
            }
        }
    }
}

fn print_config(config: &Config) -> ExitCode {
    let mut out = serde_json::Map::new();
    out.insert("profile".into(), config.profile().into());
    out.insert(
        "file".into(),
        config.file().map_or(serde_json::Value::Null, Into::into),
    );
    if let serde_json::Value::Object(sections) = config.redacted() {
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
