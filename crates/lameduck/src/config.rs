//! Configuration: the builder's settings, `from_env()`, and their validation (DESIGN.md §6).

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::signal::Signal;

/// `LAMEDUCK_SHUTDOWN_DELAY`: lame-duck time between the trigger and closing listeners.
pub const ENV_SHUTDOWN_DELAY: &str = "LAMEDUCK_SHUTDOWN_DELAY";
/// `LAMEDUCK_DRAIN_TIMEOUT`: how long in-flight work may take once listeners are closed.
pub const ENV_DRAIN_TIMEOUT: &str = "LAMEDUCK_DRAIN_TIMEOUT";
/// `LAMEDUCK_GRACE_PERIOD`: the platform's `terminationGracePeriodSeconds`.
pub const ENV_GRACE_PERIOD: &str = "LAMEDUCK_GRACE_PERIOD";
/// `LAMEDUCK_HOOK_TIMEOUT`: default per-hook timeout.
pub const ENV_HOOK_TIMEOUT: &str = "LAMEDUCK_HOOK_TIMEOUT";
/// `LAMEDUCK_ADMIN_ADDR`: the admin (probe) listener's address.
pub const ENV_ADMIN_ADDR: &str = "LAMEDUCK_ADMIN_ADDR";
/// `LAMEDUCK_SHUTDOWN_TOKEN`: when set, `/shutdown` requires header `X-Lameduck-Token`.
pub const ENV_SHUTDOWN_TOKEN: &str = "LAMEDUCK_SHUTDOWN_TOKEN";
/// `LAMEDUCK_TERMINATION_LOG`: where the final report goes (`none` disables it).
pub const ENV_TERMINATION_LOG: &str = "LAMEDUCK_TERMINATION_LOG";

/// Every variable `from_env()` reads; any other `LAMEDUCK_*` variable is reported as unknown.
pub const ENV_VARS: [&str; 7] = [
    ENV_SHUTDOWN_DELAY,
    ENV_DRAIN_TIMEOUT,
    ENV_GRACE_PERIOD,
    ENV_HOOK_TIMEOUT,
    ENV_ADMIN_ADDR,
    ENV_SHUTDOWN_TOKEN,
    ENV_TERMINATION_LOG,
];

/// Kubernetes' default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";
/// The lame-duck delay used when `KUBERNETES_SERVICE_HOST` is set and nothing else is configured.
pub const DEFAULT_KUBERNETES_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);
/// Default `drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `grace_period` (Kubernetes' default `terminationGracePeriodSeconds`).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Default per-hook timeout.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default admin listener address.
pub const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9090);
/// Upper bound of the automatic safety margin (see [`Config::safety_margin`]).
pub const MAX_AUTO_SAFETY_MARGIN: Duration = Duration::from_secs(2);

/// A configuration value that cannot be used. Its message names the variable (or setting)
/// and the value, so a bad deployment fails at start with a line an operator can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration variable did not parse as a humantime duration (`250ms`, `5s`, `1m`).
    #[error("{var}={value:?} is not a duration (expected e.g. 250ms, 5s, 1m): {source}")]
    InvalidDuration {
        /// The variable's name.
        var: &'static str,
        /// The value as found.
        value: String,
        /// Why it did not parse.
        source: humantime::DurationError,
    },
    /// An address variable did not parse as `IP:PORT`.
    #[error("{var}={value:?} is not a socket address (expected e.g. 0.0.0.0:9090): {source}")]
    InvalidAddr {
        /// The variable's name.
        var: &'static str,
        /// The value as found.
        value: String,
        /// Why it did not parse.
        source: std::net::AddrParseError,
    },
    /// A variable was set to the empty string (or only white space).
    #[error("{var} is set but empty; unset it to use the default")]
    Empty {
        /// The variable's name.
        var: &'static str,
    },
    /// A variable's value is not valid UTF-8.
    #[error("{var}={value:?} is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        var: &'static str,
        /// The value, lossily decoded.
        value: String,
    },
    /// The shutdown token contains characters that cannot travel in an HTTP header.
    #[error(
        "{var}: the shutdown token must be non-empty visible ASCII (it travels in an HTTP header)"
    )]
    InvalidToken {
        /// The variable's name.
        var: &'static str,
    },
    /// The grace period leaves no time once the safety margin is taken off.
    #[error(
        "grace period {grace_period} must be longer than the safety margin {safety_margin} \
         (set {ENV_GRACE_PERIOD} to the pod's terminationGracePeriodSeconds)"
    )]
    GracePeriodTooShort {
        /// The configured grace period.
        grace_period: humantime::FormattedDuration,
        /// The safety margin in force.
        safety_margin: humantime::FormattedDuration,
    },
    /// A signal was listed twice in [`Builder::signals`].
    #[error("signal {0} is listed twice")]
    DuplicateSignal(Signal),
}

/// Something allowed but probably wrong; logged at build time and kept in
/// [`Config::warnings`] so an application can refuse to start on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarning {
    /// `shutdown_delay + drain_timeout` does not fit before the deadline: draining will be
    /// cut short by the deadline rather than by `drain_timeout`.
    DrainExceedsDeadline {
        /// `shutdown_delay + drain_timeout`.
        needed: Duration,
        /// `grace_period - safety_margin`.
        deadline: Duration,
    },
    /// A hook timeout longer than the whole deadline can never be reached.
    HookTimeoutExceedsDeadline {
        /// The default hook timeout.
        hook_timeout: Duration,
        /// `grace_period - safety_margin`.
        deadline: Duration,
    },
    /// An environment variable starting with `LAMEDUCK_` that this crate does not read
    /// (usually a typo).
    UnknownVariable(String),
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DrainExceedsDeadline { needed, deadline } => write!(
                f,
                "shutdown_delay + drain_timeout ({}) is longer than the shutdown deadline ({}); \
                 the deadline will cut draining short",
                humantime::format_duration(*needed),
                humantime::format_duration(*deadline)
            ),
            Self::HookTimeoutExceedsDeadline {
                hook_timeout,
                deadline,
            } => write!(
                f,
                "hook timeout ({}) is longer than the shutdown deadline ({})",
                humantime::format_duration(*hook_timeout),
                humantime::format_duration(*deadline)
            ),
            Self::UnknownVariable(name) => write!(
                f,
                "environment variable {name} is not a lameduck setting (known: {})",
                ENV_VARS.join(", ")
            ),
        }
    }
}

/// The settings of a [`Lifecycle`](crate::Lifecycle), validated. Build one with
/// [`Lifecycle::builder`](crate::Lifecycle::builder) or
/// [`Builder::from_env`]; read it back with [`Lifecycle::config`](crate::Lifecycle::config).
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) shutdown_delay: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) grace_period: Duration,
    pub(crate) safety_margin: Duration,
    pub(crate) hook_timeout: Duration,
    pub(crate) admin_addr: SocketAddr,
    pub(crate) shutdown_token: Option<String>,
    pub(crate) termination_log: Option<PathBuf>,
    pub(crate) signals: Vec<Signal>,
    pub(crate) force_on_second_signal: bool,
    pub(crate) exit_process: bool,
    pub(crate) concurrent_phases: Vec<crate::Phase>,
    pub(crate) warnings: Vec<ConfigWarning>,
}

impl Config {
    /// Lame-duck time: how long after the trigger the service keeps accepting and serving
    /// while readiness already fails.
    pub fn shutdown_delay(&self) -> Duration {
        self.shutdown_delay
    }
    /// How long in-flight work may take once listeners are closed.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }
    /// The platform's grace period (`terminationGracePeriodSeconds`).
    pub fn grace_period(&self) -> Duration {
        self.grace_period
    }
    /// Time kept free before the platform's SIGKILL: the shutdown deadline is
    /// `grace_period - safety_margin` after the first trigger. Unless set, it is a tenth of
    /// the grace period, at most [`MAX_AUTO_SAFETY_MARGIN`].
    pub fn safety_margin(&self) -> Duration {
        self.safety_margin
    }
    /// `grace_period - safety_margin`: how long after the first trigger everything still
    /// pending is abandoned.
    pub fn deadline(&self) -> Duration {
        self.grace_period.saturating_sub(self.safety_margin)
    }
    /// The default per-hook timeout.
    pub fn hook_timeout(&self) -> Duration {
        self.hook_timeout
    }
    /// Where the admin (probe) endpoints listen.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    /// The token `/shutdown` requires in header `X-Lameduck-Token`, if any.
    pub fn shutdown_token(&self) -> Option<&str> {
        self.shutdown_token.as_deref()
    }
    /// Where the final report is written, if anywhere.
    pub fn termination_log(&self) -> Option<&Path> {
        self.termination_log.as_deref()
    }
    /// The signals that trigger shutdown.
    pub fn signals(&self) -> &[Signal] {
        &self.signals
    }
    /// Whether a second terminating signal during shutdown forces an immediate exit.
    pub fn force_on_second_signal(&self) -> bool {
        self.force_on_second_signal
    }
    /// Whether a forced or overdue shutdown ends the process itself (see
    /// [`Builder::exit_process`]).
    pub fn exit_process(&self) -> bool {
        self.exit_process
    }
    /// What looked wrong but was accepted; each was logged when the lifecycle was built.
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }
}

/// Builds a [`Lifecycle`](crate::Lifecycle). Start from
/// [`Lifecycle::builder`](crate::Lifecycle::builder) (defaults) or [`Builder::from_env`]
/// (defaults overridden by `LAMEDUCK_*` variables), override in code, then
/// [`build`](Builder::build).
///
/// ```
/// use std::time::Duration;
/// # fn main() -> Result<(), lameduck::ConfigError> {
/// let lifecycle = lameduck::Lifecycle::builder()
///     .shutdown_delay(Duration::from_secs(5))
///     .drain_timeout(Duration::from_secs(20))
///     .grace_period(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(lifecycle.config().deadline(), Duration::from_secs(28));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct Builder {
    shutdown_delay: Option<Duration>,
    drain_timeout: Duration,
    grace_period: Duration,
    safety_margin: Option<Duration>,
    hook_timeout: Duration,
    admin_addr: SocketAddr,
    shutdown_token: Option<String>,
    termination_log: TerminationLog,
    signals: Vec<Signal>,
    force_on_second_signal: bool,
    exit_process: bool,
    concurrent_phases: Vec<crate::Phase>,
    unknown_vars: Vec<String>,
}

#[derive(Debug, Clone)]
enum TerminationLog {
    Auto,
    Off,
    Path(PathBuf),
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            shutdown_delay: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            grace_period: DEFAULT_GRACE_PERIOD,
            safety_margin: None,
            hook_timeout: DEFAULT_HOOK_TIMEOUT,
            admin_addr: DEFAULT_ADMIN_ADDR,
            shutdown_token: None,
            termination_log: TerminationLog::Auto,
            signals: vec![Signal::Term, Signal::Int],
            force_on_second_signal: true,
            exit_process: true,
            concurrent_phases: Vec::new(),
            unknown_vars: Vec::new(),
        }
    }
}

impl Builder {
    /// Defaults, overridden by the `LAMEDUCK_*` variables of the process environment.
    /// A bad value is an error naming the variable and the value.
    ///
    /// ```
    /// # fn main() -> Result<(), lameduck::ConfigError> {
    /// let lifecycle = lameduck::Builder::from_env()?.build()?;
    /// # let _ = lifecycle;
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut builder = Self::from_lookup(|name| std::env::var_os(name))?;
        builder.unknown_vars = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| name.starts_with("LAMEDUCK_") && !ENV_VARS.contains(&name.as_str()))
            .collect();
        Ok(builder)
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup` instead of the
    /// process environment (for tests, or configuration from another source).
    ///
    /// ```
    /// let err = lameduck::Builder::from_lookup(|name| {
    ///     (name == "LAMEDUCK_DRAIN_TIMEOUT").then(|| "soon".into())
    /// })
    /// .unwrap_err();
    /// assert!(err.to_string().contains("LAMEDUCK_DRAIN_TIMEOUT=\"soon\""));
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
        let mut builder = Self::default();
        let read = |var: &'static str| -> Result<Option<String>, ConfigError> {
            let Some(raw) = lookup(var) else {
                return Ok(None);
            };
            let value = raw.into_string().map_err(|raw| ConfigError::NotUnicode {
                var,
                value: raw.to_string_lossy().into_owned(),
            })?;
            if value.trim().is_empty() {
                return Err(ConfigError::Empty { var });
            }
            Ok(Some(value))
        };
        let duration = |var: &'static str| -> Result<Option<Duration>, ConfigError> {
            read(var)?
                .map(|value| {
                    humantime::parse_duration(value.trim())
                        .map_err(|source| ConfigError::InvalidDuration { var, value, source })
                })
                .transpose()
        };
        if let Some(d) = duration(ENV_SHUTDOWN_DELAY)? {
            builder.shutdown_delay = Some(d);
        }
        if let Some(d) = duration(ENV_DRAIN_TIMEOUT)? {
            builder.drain_timeout = d;
        }
        if let Some(d) = duration(ENV_GRACE_PERIOD)? {
            builder.grace_period = d;
        }
        if let Some(d) = duration(ENV_HOOK_TIMEOUT)? {
            builder.hook_timeout = d;
        }
        if let Some(value) = read(ENV_ADMIN_ADDR)? {
            builder.admin_addr =
                value
                    .trim()
                    .parse()
                    .map_err(|source| ConfigError::InvalidAddr {
                        var: ENV_ADMIN_ADDR,
                        value,
                        source,
                    })?;
        }
        if let Some(token) = read(ENV_SHUTDOWN_TOKEN)? {
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::InvalidToken {
                    var: ENV_SHUTDOWN_TOKEN,
                });
            }
            builder.shutdown_token = Some(token);
        }
        if let Some(path) = read(ENV_TERMINATION_LOG)? {
            builder.termination_log = if path == "none" {
                TerminationLog::Off
            } else {
                TerminationLog::Path(PathBuf::from(path))
            };
        }
        Ok(builder)
    }

    /// Lame-duck time between the trigger and closing listeners. Default: 5 s when
    /// `KUBERNETES_SERVICE_HOST` is set (the process runs in a pod), else 0.
    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.shutdown_delay = Some(delay);
        self
    }
    /// How long in-flight requests and tracked tasks may take once listeners are closed.
    /// Default 20 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
    /// The platform's grace period. Default 30 s.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }
    /// Time kept free before the platform's SIGKILL. Default: a tenth of the grace period,
    /// at most 2 s.
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = Some(margin);
        self
    }
    /// Default per-hook timeout. Default 5 s.
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.hook_timeout = timeout;
        self
    }
    /// The admin listener's address. Default `0.0.0.0:9090`.
    pub fn admin_addr(mut self, addr: SocketAddr) -> Self {
        self.admin_addr = addr;
        self
    }
    /// Require header `X-Lameduck-Token: <token>` on `/shutdown`.
    pub fn shutdown_token(mut self, token: impl Into<String>) -> Self {
        self.shutdown_token = Some(token.into());
        self
    }
    /// Write the final report to `path`. Default: `/dev/termination-log` when it exists and
    /// is writable, else nowhere.
    pub fn termination_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.termination_log = TerminationLog::Path(path.into());
        self
    }
    /// Write the final report nowhere (it is still logged and returned).
    pub fn no_termination_log(mut self) -> Self {
        self.termination_log = TerminationLog::Off;
        self
    }
    /// The signals that trigger shutdown. Default SIGTERM and SIGINT.
    pub fn signals(mut self, signals: impl IntoIterator<Item = Signal>) -> Self {
        self.signals = signals.into_iter().collect();
        self
    }
    /// Listen to no signal: shutdown is triggered only by the application (or `/shutdown`).
    pub fn no_signals(mut self) -> Self {
        self.signals.clear();
        self
    }
    /// Whether a second terminating signal during shutdown forces an immediate exit.
    /// Default true. Only a signal after an earlier *signal* forces: the SIGTERM that
    /// follows a preStop `/shutdown` lets the drain finish.
    pub fn force_on_second_signal(mut self, force: bool) -> Self {
        self.force_on_second_signal = force;
        self
    }
    /// Whether a forced shutdown (second signal) or an overdue one (deadline reached) ends
    /// the process with [`std::process::exit`] once the report is written, and a watchdog
    /// thread ends it just before the platform's SIGKILL if the runtime itself is stuck.
    /// Default true: nothing left behind (a blocking thread, a stuck `main`) can outlive
    /// the grace period. Turn it off to run a lifecycle inside a test harness; the report
    /// is then returned from [`Lifecycle::run`](crate::Lifecycle::run) as usual.
    pub fn exit_process(mut self, exit: bool) -> Self {
        self.exit_process = exit;
        self
    }
    /// Run the hooks of `phase` concurrently instead of one after another in reverse
    /// registration order.
    pub fn concurrent_hooks(mut self, phase: crate::Phase) -> Self {
        if !self.concurrent_phases.contains(&phase) {
            self.concurrent_phases.push(phase);
        }
        self
    }

    /// Validate the settings (errors for impossible ones, logged warnings for suspicious
    /// ones) without building a lifecycle.
    pub fn config(self) -> Result<Config, ConfigError> {
        let shutdown_delay = self.shutdown_delay.unwrap_or_else(|| {
            if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                DEFAULT_KUBERNETES_SHUTDOWN_DELAY
            } else {
                Duration::ZERO
            }
        });
        let safety_margin = self
            .safety_margin
            .unwrap_or_else(|| (self.grace_period / 10).min(MAX_AUTO_SAFETY_MARGIN));
        if self.grace_period.is_zero() || safety_margin >= self.grace_period {
            return Err(ConfigError::GracePeriodTooShort {
                grace_period: humantime::format_duration(self.grace_period),
                safety_margin: humantime::format_duration(safety_margin),
            });
        }
        if let Some(token) = &self.shutdown_token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::InvalidToken {
                var: ENV_SHUTDOWN_TOKEN,
            });
        }
        for (i, signal) in self.signals.iter().enumerate() {
            if self.signals[..i].contains(signal) {
                return Err(ConfigError::DuplicateSignal(*signal));
            }
        }
        let termination_log = match self.termination_log {
            TerminationLog::Off => None,
            TerminationLog::Path(path) => Some(path),
            TerminationLog::Auto => {
                let default = Path::new(DEFAULT_TERMINATION_LOG);
                // Opening without `create` keeps us from making a file in /dev outside a pod.
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(default)
                    .ok()
                    .map(|_| default.to_path_buf())
            }
        };
        let deadline = self.grace_period - safety_margin;
        let mut warnings: Vec<ConfigWarning> = self
            .unknown_vars
            .into_iter()
            .map(ConfigWarning::UnknownVariable)
            .collect();
        let needed = shutdown_delay.saturating_add(self.drain_timeout);
        if needed > deadline {
            warnings.push(ConfigWarning::DrainExceedsDeadline { needed, deadline });
        }
        if self.hook_timeout > deadline {
            warnings.push(ConfigWarning::HookTimeoutExceedsDeadline {
                hook_timeout: self.hook_timeout,
                deadline,
            });
        }
        for warning in &warnings {
            tracing::warn!(%warning, "lameduck configuration");
        }
        Ok(Config {
            shutdown_delay,
            drain_timeout: self.drain_timeout,
            grace_period: self.grace_period,
            safety_margin,
            hook_timeout: self.hook_timeout,
            admin_addr: self.admin_addr,
            shutdown_token: self.shutdown_token,
            termination_log,
            signals: self.signals,
            force_on_second_signal: self.force_on_second_signal,
            exit_process: self.exit_process,
            concurrent_phases: self.concurrent_phases,
            warnings,
        })
    }

    /// Validate the settings and create the [`Lifecycle`](crate::Lifecycle).
    pub fn build(self) -> Result<crate::Lifecycle, ConfigError> {
        Ok(crate::Lifecycle::with_config(self.config()?))
    }
}

/// Print a configuration error to stderr and exit with status 78 (`EX_CONFIG`): for `main`,
/// where a bad deployment should fail at once and say why.
///
/// ```no_run
/// let lifecycle = lameduck::Lifecycle::from_env()
///     .unwrap_or_else(|e| lameduck::exit_on_config_error(e));
/// # let _ = lifecycle;
/// ```
pub fn exit_on_config_error(error: ConfigError) -> ! {
    eprintln!("lameduck: configuration error: {error}");
    std::process::exit(78)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn reads_every_variable() {
        let config = Builder::from_lookup(lookup(&[
            (ENV_SHUTDOWN_DELAY, "250ms"),
            (ENV_DRAIN_TIMEOUT, "7s"),
            (ENV_GRACE_PERIOD, "1m"),
            (ENV_HOOK_TIMEOUT, "3s"),
            (ENV_ADMIN_ADDR, "127.0.0.1:9999"),
            (ENV_SHUTDOWN_TOKEN, "s3cret"),
            (ENV_TERMINATION_LOG, "/tmp/report.json"),
        ]))
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(config.shutdown_delay(), Duration::from_millis(250));
        assert_eq!(config.drain_timeout(), Duration::from_secs(7));
        assert_eq!(config.grace_period(), Duration::from_secs(60));
        assert_eq!(config.hook_timeout(), Duration::from_secs(3));
        assert_eq!(config.admin_addr(), "127.0.0.1:9999".parse().unwrap());
        assert_eq!(config.shutdown_token(), Some("s3cret"));
        assert_eq!(
            config.termination_log(),
            Some(Path::new("/tmp/report.json"))
        );
        assert_eq!(config.safety_margin(), Duration::from_secs(2));
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn rejects_each_bad_value_naming_it() {
        let cases: &[(&str, &str)] = &[
            (ENV_SHUTDOWN_DELAY, "5 parsecs"),
            (ENV_DRAIN_TIMEOUT, "-1s"),
            (ENV_GRACE_PERIOD, "thirty"),
            (ENV_HOOK_TIMEOUT, "5"),
            (ENV_ADMIN_ADDR, "localhost"),
            (ENV_SHUTDOWN_TOKEN, "has space"),
        ];
        for (var, value) in cases {
            let err = Builder::from_lookup(lookup(&[(var, value)])).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(var), "{message} should name {var}");
            if *var != ENV_SHUTDOWN_TOKEN {
                // The token's value is a secret: it is never echoed.
                assert!(message.contains(value), "{message} should quote {value}");
            } else {
                assert!(
                    !message.contains(value),
                    "{message} must not echo the token"
                );
            }
        }
        for var in ENV_VARS {
            let err = Builder::from_lookup(lookup(&[(var, "  ")])).unwrap_err();
            assert!(matches!(err, ConfigError::Empty { var: v } if v == var));
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn grace_period_must_exceed_margin() {
        let err = Builder::from_lookup(lookup(&[(ENV_GRACE_PERIOD, "0s")]))
            .unwrap()
            .config()
            .unwrap_err();
        assert!(matches!(err, ConfigError::GracePeriodTooShort { .. }));
        let err = Builder::default()
            .grace_period(Duration::from_secs(1))
            .safety_margin(Duration::from_secs(1))
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("safety margin 1s"), "{err}");
    }

    #[test]
    fn warns_when_drain_cannot_fit_before_deadline() {
        let config = Builder::default()
            .shutdown_delay(Duration::from_secs(5))
            .drain_timeout(Duration::from_secs(20))
            .grace_period(Duration::from_secs(10))
            .config()
            .unwrap();
        assert_eq!(config.deadline(), Duration::from_secs(9));
        assert!(
            config
                .warnings()
                .contains(&ConfigWarning::DrainExceedsDeadline {
                    needed: Duration::from_secs(25),
                    deadline: Duration::from_secs(9)
                })
        );
    }

    #[test]
    fn termination_log_none_disables_it() {
        let config = Builder::from_lookup(lookup(&[(ENV_TERMINATION_LOG, "none")]))
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(config.termination_log(), None);
    }

    #[test]
    fn the_builder_checks_the_token_too() {
        for bad in ["", "two words", "tab\there"] {
            let err = Builder::default().shutdown_token(bad).config().unwrap_err();
            assert!(matches!(err, ConfigError::InvalidToken { .. }), "{bad:?}");
        }
        assert!(
            Builder::default()
                .shutdown_token("ok-token")
                .config()
                .is_ok()
        );
    }

    #[test]
    fn duplicate_signal_is_an_error() {
        let err = Builder::default()
            .signals([Signal::Term, Signal::Term])
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("SIGTERM"));
    }

    #[test]
    fn auto_margin_is_a_tenth_capped_at_two_seconds() {
        let margin = |grace| {
            Builder::default()
                .grace_period(grace)
                .config()
                .unwrap()
                .safety_margin()
        };
        assert_eq!(margin(Duration::from_secs(30)), Duration::from_secs(2));
        assert_eq!(margin(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(margin(Duration::from_secs(1)), Duration::from_millis(100));
    }
}
