//! Logging setup: `tracing` with a filter from `RUST_LOG` or the config, as
//! text for people or JSON for log collectors.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // PostgreSQL reports harmless notices, such as "relation already
        // exists, skipping" at every start, which would clutter the log.
        .add_directive(
            "sqlx::postgres::notice=warn"
                .parse()
                .expect("static directive"),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second initialisation (as in tests) keeps the first subscriber.
    drop(result);
}

static METRICS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Installs the process-wide Prometheus recorder that `/metrics` renders.
/// Only `serve` calls it, so commands and tests that build the application
/// in-process record nothing.
pub fn init_metrics() -> anyhow::Result<()> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let _ = METRICS.set(handle);
    Ok(())
}

/// Returns the metrics in the Prometheus text format, or `None` when no
/// recorder is installed.
pub fn render_metrics() -> Option<String> {
    METRICS.get().map(|handle| handle.render())
}
