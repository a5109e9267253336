use std::process::ExitCode;

use rally::config::{Config, ConfigOutcome};
use rally::{command, shutdown, telemetry};

/// Exit code for unusable configuration, as for command-line usage errors.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let config = match Config::from_args() {
        Ok(config) => config,
        Err(ConfigOutcome::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(ConfigOutcome::Invalid(line)) => {
            eprintln!("{line}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(command) = &config.command {
        return run_command(command, &config);
    }
    if let Err(line) = telemetry::init(config.log_format) {
        eprintln!("{line}");
        return ExitCode::from(EXIT_USAGE);
    }
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A command instead of serving: its output on stdout, or why it failed on stderr (exit 1).
fn run_command(command: &command::Command, config: &Config) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())
        .and_then(|runtime| {
            runtime
                .block_on(command::run(
                    command,
                    &config.data_dir,
                    config.redis_url.as_ref().map(|url| url.as_str()),
                ))
                .map_err(|err| err.to_string())
        });
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(line) => {
            eprintln!("rally: {line}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = rally::bind(&config).await?;
        rally::run(listener, config, shutdown::os_signal()).await?;
        Ok(())
    })
}
