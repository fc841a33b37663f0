//! `loadgen`: the command-line front of `lameduck-loadgen`. See the package README.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use lameduck_loadgen::{ConfigError, IdleConnections, LoadConfig, Method, SlowRequests, Target};

/// Steady keep-alive HTTP/1.1 load that classifies every request: ok, status_5xx, refused,
/// no_response, timeout, not_sent.
#[derive(Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Open K keep-alive connections, send one GET on each, hold them idle until the
    /// server closes them all (or --hold ends), and report when it did.
    Idle(IdleArgs),
    /// Start K concurrent GET /work?ms=N requests, each on its own connection, and wait
    /// for them.
    Slow(SlowArgs),
}

#[derive(Args)]
struct LoadArgs {
    /// Target, e.g. http://127.0.0.1:8080/orders
    #[arg(long, required = true)]
    url: Option<String>,
    /// Concurrent workers, each with one keep-alive connection.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Aggregate requests per second (0: as fast as possible).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// How long to send, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: Method,
    /// Request body, sent as application/json unless --header sets content-type.
    #[arg(long)]
    body: Option<String>,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Time from handing a request over to the end of its response body.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Time allowed for a TCP connect (past it: refused).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Stop once connects have been refused, with no response in between, for 1 s.
    #[arg(long)]
    until_refused: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write the per-second timeline as CSV to this file.
    #[arg(long)]
    timeline: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct IdleArgs {
    /// Target whose path gets the one GET per connection, e.g. http://127.0.0.1:8080/
    #[arg(long)]
    url: String,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Longest time to hold them.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Timeout of each connect and of each first request.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SlowArgs {
    /// The server, e.g. http://127.0.0.1:8080 (the path is replaced by /work?ms=N).
    #[arg(long)]
    url: String,
    /// Concurrent requests.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// How long each request works on the server, ms.
    #[arg(long, default_value_t = 5000)]
    ms: u64,
    /// Timeout of each request.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => load(cli.load).await,
        Some(Command::Idle(args)) => idle(args).await,
        Some(Command::Slow(args)) => slow(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Io(String),
}

async fn load(args: LoadArgs) -> Result<(), CliError> {
    let url = args.url.unwrap_or_default();
    let mut config = LoadConfig::new(&url)?;
    for header in &args.headers {
        config = config.header(header)?;
    }
    if let Some(body) = args.body {
        config = config.json_body(body);
    }
    config.method = args.method;
    config.connections = args.connections;
    config.rate = args.rate;
    config.duration = Some(args.duration);
    config.request_timeout = args.request_timeout;
    config.connect_timeout = args.connect_timeout;
    config.until_refused = args.until_refused.then_some(Duration::from_secs(1));

    let report = lameduck_loadgen::run(config, std::future::pending()).await;

    if let Some(path) = &args.timeline {
        std::fs::write(path, report.timeline_csv())
            .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
    }
    if args.json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct IdleResult {
    url: String,
    opened: usize,
    failed: usize,
    opened_in_ms: u64,
    /// Connections the server closed while held.
    closed_by_server: usize,
    /// From "all opened" to the server's last close, if it closed them all.
    all_closed_after_ms: Option<u64>,
    errors: Vec<String>,
}

async fn idle(args: IdleArgs) -> Result<(), CliError> {
    let target = Target::parse(&args.url)?;
    let idle = IdleConnections::open(&target, args.connections, args.timeout).await;
    eprintln!(
        "loadgen: holding {} idle connections ({} failed) to {}",
        idle.opened(),
        idle.failed(),
        target.url()
    );
    let held = std::time::Instant::now();
    let all_closed = tokio::time::timeout(args.hold, idle.wait_all_closed())
        .await
        .ok()
        .map(|()| ms(held.elapsed()));
    let result = IdleResult {
        url: target.url().to_owned(),
        opened: idle.opened(),
        failed: idle.failed(),
        opened_in_ms: ms(idle.opened_in()),
        closed_by_server: idle.closed(),
        all_closed_after_ms: all_closed,
        errors: idle.errors().to_vec(),
    };
    if args.json {
        print_json(&result)
    } else {
        println!(
            "opened {} (failed {}) in {} ms; closed by server {}; all closed after {}",
            result.opened,
            result.failed,
            result.opened_in_ms,
            result.closed_by_server,
            result
                .all_closed_after_ms
                .map_or("-".to_owned(), |ms| format!("{ms} ms"))
        );
        for e in &result.errors {
            println!("error {e}");
        }
        Ok(())
    }
}

async fn slow(args: SlowArgs) -> Result<(), CliError> {
    let target = Target::parse(&args.url)?.with_path(&format!("/work?ms={}", args.ms))?;
    let slow = SlowRequests::start(&target, args.count, args.request_timeout);
    slow.wait_sent().await;
    eprintln!("loadgen: {} requests to {} sent", slow.sent(), target.url());
    let report = slow.finish().await;
    if args.json {
        print_json(&report)
    } else {
        let c = &report.counts;
        println!(
            "requests {}  ok {}  status_5xx {}  refused {}  no_response {}  timeout {}  not_sent {}",
            report.requests, c.ok, c.status_5xx, c.refused, c.no_response, c.timeout, c.not_sent
        );
        println!(
            "latency p50 {} µs  max {} µs  elapsed {} ms",
            report.latency_p50_us, report.latency_max_us, report.elapsed_ms
        );
        for e in &report.errors {
            println!("error {e}");
        }
        Ok(())
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let json = serde_json::to_string_pretty(value).map_err(|e| CliError::Io(e.to_string()))?;
    println!("{json}");
    Ok(())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
