//! Service configuration: every setting is a CLI flag with a `RESERVOIR_*`
//! environment equivalent, so the same binary is configured the same way in a
//! shell, a systemd unit or docker-compose.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "reservoir",
    version,
    about = "Offline-first reservation service"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "RESERVOIR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory holding the SQLite database and the generated admin token.
    #[arg(long, env = "RESERVOIR_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Admin bearer token. When unset, one is generated on first start and
    /// written to `<data_dir>/admin-token`.
    #[arg(long, env = "RESERVOIR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// SQLite `synchronous` pragma: `normal` survives process crashes,
    /// `full` also survives power loss at the cost of an fsync per commit.
    #[arg(long, env = "RESERVOIR_SQLITE_SYNCHRONOUS", value_enum, default_value_t = Synchronous::Normal)]
    pub sqlite_synchronous: Synchronous,

    /// Connections in the read-only SQLite pool.
    #[arg(long, env = "RESERVOIR_READ_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub read_connections: u32,

    /// Log output format.
    #[arg(long, env = "RESERVOIR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Synchronous {
    Normal,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Config {
    /// A configuration with every default and the given data directory,
    /// ignoring the process environment. Used by tests and benches.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            admin_token: None,
            sqlite_synchronous: Synchronous::Normal,
            read_connections: 4,
            log_format: LogFormat::Pretty,
        }
    }
}
