//! Log setup: `RUST_LOG` filters, `RESERVOIR_LOG_FORMAT` picks human-readable
//! or one JSON object per line (for log shippers).

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = fmt().with_env_filter(filter);
    let result = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests launching several servers) keeps the first one.
    let _ = result;
}
