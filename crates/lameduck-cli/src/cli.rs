//! The command line: clap definitions, help texts and examples.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::duration;
use crate::hook_log::LogTo;
use crate::once::Key;

/// Default state directory of `once` when neither `--state-dir` nor the variable is set.
pub(crate) const DEFAULT_STATE_DIR: &str = "/tmp/lameduck-once";

const MAIN_HELP: &str = "\
Exit codes:
  run         the child's exit code (128+N if killed by signal N), 137 if it had to
              be killed at the deadline, 78 configuration error, 125 lameduck could
              not start, 126 cannot execute, 127 not found, 2 usage error
  probe       0 success (HTTP 200-399), 1 failure, 2 usage error; for grpc:// URLs
              0 SERVING, 1 not SERVING, 3 unknown service, 4 cannot connect,
              5 timeout, 6 other gRPC or protocol error, 2 usage error
  prestop     0 always, 2 usage error
  once        the command's exit code (128+N if killed by signal N), 0 if it already
              succeeded, 125 if lameduck could not run it (state directory, lock),
              126 cannot execute, 127 not found, 2 usage error
  install     0 installed, 1 failure, 2 usage error
  wait-ready  0 ready, 1 not ready at the timeout, 2 usage error
  simulate    0 no request failed, liveness held, no SIGKILL; 1 problems found;
              3 the service could not start or was never ready; 130 interrupted
              (the service is killed); 2 usage error

Run `lameduck help <command>` for examples.";

const INSTALL_HELP: &str = "\
Copies the running lameduck binary to DIR/lameduck, for images without a shell (no cp):
an init container installs it into a shared volume, where the other containers run it.

The copy is atomic: a temporary file in DIR (.lameduck.tmp.*) is written, flushed to
disk and given mode 0755, then renamed over DIR/lameduck, so a reader sees the old file
or the whole new one, never a partial binary. Installing again replaces the file. DIR
must exist and be a directory (it is not created). On failure the temporary file is
removed.

Exit codes:
  0  installed; one line on stderr
  1  failure (DIR missing or not a directory, cannot write...); one line on stderr
     naming the path and the OS error
  2  usage error

Examples:
  lameduck install /shared

  # Kubernetes: an init container copies the binary into an emptyDir
  initContainers:
    - name: install-lameduck
      image: example.com/lameduck:latest        # the binary at /lameduck
      command: [/lameduck, install, /shared]
      volumeMounts: [{name: lameduck, mountPath: /shared}]
  containers:
    - name: app
      command: [/shared/lameduck, run, --, /app/server]
      volumeMounts: [{name: lameduck, mountPath: /shared}]
  volumes: [{name: lameduck, emptyDir: {}}]";

const WAIT_READY_HELP: &str = "\
Asks URL the way the kubelet asks a readiness probe, every 200ms, until it is ready or
--timeout passes:
  - http://HOST:PORT/PATH: ready when the GET answers 200-399 within 1s (redirects
    followed as by `lameduck probe`); https:// is refused (no TLS in this binary)
  - tcp://HOST:PORT: ready when a connection is accepted within 1s
At the timeout, the last attempt's reason is printed.

Exit codes:
  0  ready; one line on stderr
  1  not ready at the timeout; one line on stderr with the last reason
  2  usage error, including a URL that is not http:// or tcp://

Examples:
  lameduck wait-ready http://127.0.0.1:8080/healthz
  lameduck wait-ready --timeout 2m tcp://postgres:5432

  # Kubernetes: a postStart hook holding the container's start until the app serves
  # (the kubelet starts the next container only when the hook has returned):
  lifecycle:
    postStart:
      exec:
        command: [/lameduck, wait-ready, --timeout, 30s, http://127.0.0.1:8080/healthz]

  # or an init container waiting for a dependency:
  initContainers:
    - name: wait-db
      image: example.com/lameduck:latest
      command: [/lameduck, wait-ready, --timeout, 5m, tcp://postgres:5432]";

const PROBE_HELP: &str = "\
Semantics for http:// URLs (the kubelet's httpGet probe):
  - a new connection, GET, `User-Agent: lameduck-probe/<version>` and `Accept: */*`
    unless given with --header (an empty value removes them), `Connection: close`
  - success is status 200-399; at most 10 KiB of the body is read
  - redirects are followed while they stay on the same host name (any port), at most
    10 requests in all; a redirect to another host is not followed: its 3xx status
    counts as success, with a warning on stderr
  - --timeout covers everything: connect, request, redirects, body
  - https:// is refused (no TLS in this binary)

grpc://HOST:PORT[/SERVICE] (what grpc_health_probe and the kubelet's grpc probe do):
  - one grpc.health.v1.Health/Check call with `service` = SERVICE (the path as written;
    empty, meaning the whole server, without one), on a new plaintext HTTP/2 connection
    (h2c with prior knowledge); success only when the answer is SERVING
  - the port is required; grpcs:// is refused (no TLS in this binary)
  - --timeout covers connecting and the call, and is sent as the gRPC deadline
    (grpc-timeout: what is left of it when the call starts)
  - --header becomes ASCII request metadata; `User-Agent: lameduck-probe/<version>` is
    sent unless given (an empty value removes it); `Host` sets :authority; -bin
    (binary), grpc-*, te, content-type, content-length and connection-specific headers
    are refused (usage error)

Exit codes:
  for http:// URLs:
    0  success (a warning may be printed on stderr)
    1  failure: status, timeout, refused connection, bad URL...; one line on stderr
    2  usage error, including a port that is not a number from 1 to 65535
  for grpc:// URLs (one line on stderr, except for 0):
    0  SERVING
    1  the health service answered, but not SERVING (NOT_SERVING, UNKNOWN,
       SERVICE_UNKNOWN): the line names the status and the service
    2  usage error: bad arguments, no port or a port that is not 1-65535, grpcs://,
       credentials in the URL, a header that cannot be sent
    3  unknown service: the server answered gRPC status NOT_FOUND
    4  cannot connect: no such host, refused, reset or unreachable while connecting;
       the line names the host or address
    5  timeout: --timeout elapsed (or the server answered DEADLINE_EXCEEDED)
    6  any other error: a gRPC status such as UNIMPLEMENTED (no health service there),
       not an HTTP/2 server (an HTTP/1 port), a connection closed or reset after it was
       made, a protocol error; the line names the code and message

Examples:
  lameduck probe http://127.0.0.1:9090/healthz
  lameduck probe --timeout 250ms http://127.0.0.1:9090/readyz
  lameduck probe -H 'Authorization: Bearer t0k3n' -H 'Host: api.local' http://127.0.0.1:9090/livez
  lameduck probe grpc://127.0.0.1:50051
  lameduck probe --timeout 2s grpc://127.0.0.1:50051/helloworld.Greeter

  # Kubernetes exec probe in a distroless image:
  readinessProbe:
    exec:
      command: [/lameduck, probe, --timeout, 1s, http://127.0.0.1:9090/readyz]
  livenessProbe:
    exec:
      command: [/lameduck, probe, grpc://127.0.0.1:50051/liveness]";

const PRESTOP_HELP: &str = "\
With --url the GET is sent and its answer awaited (status and body are reported, not
judged: like the kubelet's httpGet preStop, only a transport error is a failure); with
--sleep it sleeps; with both it calls first, then sleeps. A failure is logged and the
exit code is still 0: a failed preStop does not stop termination anyway.

Lines go to PID 1's stdout when it can be opened (so they appear in `kubectl logs`),
else to stderr; --log-to or LAMEDUCK_PRESTOP_LOG (auto, pid1, stderr) chooses.

Exit codes:
  0  always, whatever happened to the call
  2  usage error

Examples:
  lameduck prestop --url http://127.0.0.1:9090/shutdown
  lameduck prestop --sleep 5s
  lameduck prestop --url http://127.0.0.1:9090/shutdown --timeout 20s --sleep 2s

  # Kubernetes preStop hook in a distroless image:
  lifecycle:
    preStop:
      exec:
        command: [/lameduck, prestop, --url, http://127.0.0.1:9090/shutdown]";

const ONCE_HELP: &str = "\
Concurrent invocations with one key: one runs the command, the others wait for it and
exit with its result. After a success, later invocations exit 0 without running. After a
failure, the next invocation runs the command again. If the runner dies mid-run, the
next invocation runs the command again, but only once the dead run's command and every
process it started have exited: they inherit the key's lock and hold it until then (the
command itself is also sent SIGKILL when the runner dies, on Linux).

State: KEY.lock and KEY.result in the state directory (--state-dir, else
$LAMEDUCK_STATE_DIR, else /tmp/lameduck-once). Delete KEY.result to reset a key. Use a
local file system: the lock is flock(2).

Exit codes:
  the command's     its exit code; 128+N when killed by signal N
  0                 the key had already succeeded: nothing was run
  125               lameduck could not run the command (state directory, lock, result file)
  126, 127          the command could not be executed / was not found
  2                 usage error (bad key...)

Examples:
  lameduck once --key migrate -- /app/migrate --up
  lameduck once --key warm-cache --state-dir /var/run/hooks -- /app/warm

  # Kubernetes postStart hook that must not run twice per pod (emptyDir at /hooks):
  lifecycle:
    postStart:
      exec:
        command: [/lameduck, once, --key, register, --state-dir, /hooks, --, /app/register]";

const RUN_HELP: &str = "\
The child runs in its own process group with this process's stdin, stdout, stderr and
environment. lameduck becomes a child subreaper (and is PID 1 in a container without
another init): it reaps every orphan, and forwards SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT,
SIGWINCH, SIGCONT and SIGTSTP to the child.

The admin endpoints of the lameduck SDK listen on LAMEDUCK_ADMIN_ADDR (default
0.0.0.0:9090): /livez (the child runs), /readyz (the child is ready, per --ready, and
no shutdown has begun), /startupz, /shutdown (the preStop target; LAMEDUCK_SHUTDOWN_TOKEN).

On SIGTERM, SIGINT or /shutdown: readiness fails at once; the child keeps serving for
LAMEDUCK_SHUTDOWN_DELAY (default 5s in Kubernetes, else 0); then it gets --stop-signal,
and has until the deadline (LAMEDUCK_GRACE_PERIOD, default 30s, minus a safety margin of
a tenth of it, at most 2s) to exit; then its process group gets SIGKILL. A second SIGTERM
or SIGINT sends the stop signal at once. A child that exits on its own ends lameduck at
once, with its status. The report (JSON, with the child's pid, status, and whether it was
killed) goes to LAMEDUCK_TERMINATION_LOG (default /dev/termination-log when writable).

Exit codes:
  the child's  its exit code; 128+N when a signal N ended it
  137          the child had to be killed at the deadline
  78           configuration error (a LAMEDUCK_* variable)
  125          lameduck could not start (signals, the admin port)
  126, 127     the command could not be executed / was not found
  2            usage error

Examples:
  lameduck run -- /app/server --port 8080
  lameduck run --ready http://127.0.0.1:8080/healthz -- python3 app.py
  lameduck run --stop-signal SIGQUIT --ready http://127.0.0.1:80/ -- nginx -g 'daemon off;'

  # Kubernetes: the binary copied into an emptyDir by an init container
  command: [/lameduck/lameduck, run, --stop-signal, SIGQUIT, --, nginx, -g, 'daemon off;']";

/// `lameduck`: graceful-shutdown helpers for images and programs that cannot link the
/// lameduck SDK (distroless images without shell, curl or sleep; hooks delivered more than
/// once).
#[derive(Debug, Parser)]
#[command(
    name = "lameduck",
    version,
    about = "Graceful-shutdown helpers for images and programs that cannot link the lameduck SDK",
    long_about = None,
    after_help = MAIN_HELP
)]
pub(crate) struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Supervise a program that cannot link the SDK: PID 1, probes, lame duck, deadline
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// GET a URL as the kubelet's HTTP probe does, or check a grpc:// health service (exec probes)
    #[command(after_help = PROBE_HELP)]
    Probe(ProbeArgs),
    /// preStop hook: call the service's /shutdown endpoint and wait, and/or sleep
    #[command(after_help = PRESTOP_HELP)]
    Prestop(PrestopArgs),
    /// Run a command once per key and container, for hooks delivered at least once
    #[command(after_help = ONCE_HELP)]
    Once(OnceArgs),
    /// Copy this binary to DIR/lameduck, atomically (for an init container without cp)
    #[command(after_help = INSTALL_HELP)]
    Install(InstallArgs),
    /// Wait until an http:// or tcp:// URL is ready, or fail at the timeout
    #[command(after_help = WAIT_READY_HELP)]
    WaitReady(WaitReadyArgs),
    /// Play the kubelet's termination sequence against a service under load, and judge it
    #[command(after_help = SIMULATE_HELP)]
    Simulate(SimulateArgs),
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The child's readiness: http://HOST:PORT/PATH (200-399 within 1 s) or tcp://HOST:PORT
    /// (a connection is accepted); without it, ready once started
    // Checked in `main`, not by clap, whose message would repeat a URL's credentials.
    #[arg(long, value_name = "URL")]
    pub(crate) ready: Option<String>,

    /// The signal that asks the child to stop gracefully (nginx: SIGQUIT)
    #[arg(long, value_name = "SIGNAL", default_value = "SIGTERM", value_parser = crate::run::parse_signal)]
    pub(crate) stop_signal: nix::sys::signal::Signal,

    /// The command and its arguments
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<OsString>,
}

/// Arguments of `probe`.
#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// The http:// URL to GET, or grpc://HOST:PORT[/SERVICE] to check
    // Checked in `main`, not by clap, whose message would repeat a URL's credentials.
    #[arg(value_name = "URL")]
    pub(crate) url: String,

    /// Give up after this long, for everything (connect, request, redirects, body; for grpc://, also the gRPC deadline)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration::parse_timeout)]
    pub(crate) timeout: Duration,

    /// Request header 'Name: value' (gRPC metadata for grpc://); repeatable
    // Parsed in `main`, not by clap, whose error would repeat the argument as typed.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub(crate) headers: Vec<String>,
}

/// Arguments of `prestop`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("action").required(true).multiple(true).args(["url", "sleep"])))]
pub(crate) struct PrestopArgs {
    /// GET this http:// URL (usually the service's /shutdown) and wait for the answer
    // Checked in `main` (`Target::parse`), not by a clap value parser: clap's message would
    // repeat the value as given, credentials included.
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,

    /// Request header 'Name: value' for --url; repeatable
    #[arg(
        short = 'H',
        long = "header",
        value_name = "NAME: VALUE",
        requires = "url"
    )]
    pub(crate) headers: Vec<String>,

    /// Sleep this long (after the call, if --url is given too)
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub(crate) sleep: Option<Duration>,

    /// Deadline of the call; generous because /shutdown answers only after the lame-duck delay
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_timeout)]
    pub(crate) timeout: Duration,

    /// Where to log
    #[arg(long, value_enum, value_name = "WHERE", default_value_t = LogTo::Auto, env = "LAMEDUCK_PRESTOP_LOG")]
    pub(crate) log_to: LogTo,
}

/// Arguments of `once`.
#[derive(Debug, Args)]
pub(crate) struct OnceArgs {
    /// Names the action: 1-128 characters of [A-Za-z0-9._-]
    #[arg(long, value_name = "KEY", value_parser = Key::parse)]
    pub(crate) key: Key,

    /// Directory of the lock and result files (created if missing)
    #[arg(long, value_name = "DIR", env = "LAMEDUCK_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub(crate) state_dir: PathBuf,

    /// The command and its arguments
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<OsString>,
}

/// Arguments of `install`.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// The directory to install lameduck into (must exist)
    #[arg(value_name = "DIR")]
    pub(crate) dir: PathBuf,
}

/// Arguments of `wait-ready`.
#[derive(Debug, Args)]
pub(crate) struct WaitReadyArgs {
    /// http://HOST:PORT/PATH (ready at 200-399 within 1 s) or tcp://HOST:PORT (a connection
    /// is accepted)
    // Checked in `main`, not by clap, whose message would repeat a URL's credentials.
    #[arg(value_name = "URL")]
    pub(crate) url: String,

    /// Give up after this long
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration::parse_timeout)]
    pub(crate) timeout: Duration,
}

const SIMULATE_HELP: &str = "\
Starts CMD and waits until --ready answers 200-399 within 1 s (as a startup probe, up to
--startup-timeout). Then --clients keep-alive clients send --rate requests/s in total to
--traffic, and --ready (and --live) are probed every --probe-period. After --before, the
trigger, as when a pod is deleted: the preStop hook (--prestop, an HTTP GET that blocks)
if given, then SIGTERM. Traffic keeps coming for --propagation from the trigger, as
endpoints, kube-proxy and load balancers catch up, then stops. At --grace from the
trigger, CMD's process group gets SIGKILL if CMD is still running.

Every request is classified: ok, refused (no connection), no_response (written, never
answered), status_5xx, timeout. The verdict gives the failures by class and when, how long
readiness took to fail, liveness failures during the shutdown (a restart in a cluster),
when CMD exited and how, the termination message (LAMEDUCK_TERMINATION_LOG is set for CMD
unless it is already set), and one line of advice per problem. As in a pod, CMD also gets
KUBERNETES_SERVICE_HOST=127.0.0.1 and KUBERNETES_SERVICE_PORT=443 unless they are set
(--no-pod-env: not), so services that detect Kubernetes plan for it. Everything stays
within the addresses given; the run ends by --before + --grace after it was ready.

Exit status: 0 when no request failed, liveness held and no SIGKILL was needed; 1 when
something of that went wrong; 3 when the run could not be made (--ready or --traffic
already answered before CMD started; CMD could not start, exited before it was ready or
before the trigger, or never became ready); 130 when interrupted (CMD is killed).

Examples:
  lameduck simulate --ready http://127.0.0.1:9090/readyz --live http://127.0.0.1:9090/livez \\
      --traffic http://127.0.0.1:8080/ -- ./my-service
  lameduck simulate --ready http://127.0.0.1:8000/health --traffic http://127.0.0.1:8000/ \\
      --json --plot shutdown.svg -- python3 app.py";

/// Arguments of `simulate`.
#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Readiness: http://HOST:PORT/PATH, ready at 200-399 within 1 s
    // Checked in `main`, not by clap, whose message would repeat a URL's credentials.
    #[arg(long, value_name = "URL")]
    pub(crate) ready: String,

    /// Where the load goes: http://HOST:PORT/PATH (GET, HTTP/1.1 keep-alive)
    #[arg(long, value_name = "URL")]
    pub(crate) traffic: String,

    /// Liveness: http://HOST:PORT/PATH, probed like readiness; failures during the shutdown
    /// fail the verdict
    #[arg(long, value_name = "URL")]
    pub(crate) live: Option<String>,

    /// The preStop hook: an HTTP GET sent at the trigger, before SIGTERM, which waits for it
    #[arg(long, value_name = "URL")]
    pub(crate) prestop: Option<String>,

    /// Keep-alive clients
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(crate) clients: u16,

    /// Requests per second in total
    #[arg(long, value_name = "R", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) rate: u64,

    /// How long traffic runs before the trigger
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration::parse)]
    pub(crate) before: Duration,

    /// How long traffic keeps coming after the trigger (endpoint propagation)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration::parse)]
    pub(crate) propagation: Duration,

    /// The grace period: SIGKILL this long after the trigger
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_timeout)]
    pub(crate) grace: Duration,

    /// How long CMD may take to become ready
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse_timeout)]
    pub(crate) startup_timeout: Duration,

    /// How often readiness and liveness are probed (the kubelet's periodSeconds; 1 s is its
    /// shortest)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration::parse_timeout)]
    pub(crate) probe_period: Duration,

    /// How long a request may take before it counts as a timeout
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration::parse_timeout)]
    pub(crate) request_timeout: Duration,

    /// Print the verdict as one JSON object
    #[arg(long)]
    pub(crate) json: bool,

    /// Write the timeline as an SVG picture to FILE
    #[arg(long, value_name = "FILE")]
    pub(crate) plot: Option<PathBuf>,

    /// Write CMD's output to FILE (default: a file in a fresh temporary directory)
    #[arg(long, value_name = "FILE")]
    pub(crate) service_log: Option<PathBuf>,

    /// Do not set KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT for CMD (set by
    /// default, unless already set, as every container in a pod has them)
    #[arg(long)]
    pub(crate) no_pod_env: bool,

    /// The command and its arguments
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
