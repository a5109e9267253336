use std::process::ExitCode;

use rally::config::{Config, ConfigOutcome};
use rally::{shutdown, telemetry};

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
