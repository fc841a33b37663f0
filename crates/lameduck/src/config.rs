//! Configuration: the builder's settings, `from_env()`, and their validation
//! (docs/configuration.md).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::platform::Platform;
use crate::signal::Signal;

/// `LAMEDUCK_SHUTDOWN_DELAY`: lame-duck time between the trigger and closing listeners.
pub const ENV_SHUTDOWN_DELAY: &str = "LAMEDUCK_SHUTDOWN_DELAY";
/// `LAMEDUCK_DRAIN_TIMEOUT`: how long in-flight work may take once listeners are closed.
pub const ENV_DRAIN_TIMEOUT: &str = "LAMEDUCK_DRAIN_TIMEOUT";
/// `LAMEDUCK_GRACE_PERIOD`: the platform's time between its stop signal and SIGKILL
/// (Kubernetes' `terminationGracePeriodSeconds`; see [`Platform`]).
pub const ENV_GRACE_PERIOD: &str = "LAMEDUCK_GRACE_PERIOD";
/// `LAMEDUCK_HOOK_TIMEOUT`: default per-hook timeout.
pub const ENV_HOOK_TIMEOUT: &str = "LAMEDUCK_HOOK_TIMEOUT";
/// `LAMEDUCK_TERMINATION_LOG`: where the final report goes (`none` disables it).
pub const ENV_TERMINATION_LOG: &str = "LAMEDUCK_TERMINATION_LOG";

/// Every variable `from_env()` reads. A `LAMEDUCK_*` variable that is neither one of these
/// nor one the admin endpoints read (`LAMEDUCK_ADMIN_ADDR`, `LAMEDUCK_SHUTDOWN_TOKEN`) is
/// reported as unknown.
pub const ENV_VARS: [&str; 5] = [
    ENV_SHUTDOWN_DELAY,
    ENV_DRAIN_TIMEOUT,
    ENV_GRACE_PERIOD,
    ENV_HOOK_TIMEOUT,
    ENV_TERMINATION_LOG,
];

/// The variables of the admin endpoints (`lameduck-axum`), which parses them: known here
/// only by name, so that setting them is not reported as a typo.
const ADMIN_ENV_VARS: [&str; 2] = ["LAMEDUCK_ADMIN_ADDR", "LAMEDUCK_SHUTDOWN_TOKEN"];

fn is_known_variable(name: &str) -> bool {
    ENV_VARS.contains(&name) || ADMIN_ENV_VARS.contains(&name)
}

/// Kubernetes' default `terminationMessagePath`.
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";
/// The lame-duck delay used on [`Platform::Kubernetes`] (`KUBERNETES_SERVICE_HOST` is set)
/// when nothing else is configured; 0 elsewhere.
pub const DEFAULT_KUBERNETES_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);
/// Default `drain_timeout` on Kubernetes, ECS, systemd and an unknown platform (Cloud Run:
/// 7 s; Nomad: 3 s; see [`Platform`]).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `grace_period` on Kubernetes (its default `terminationGracePeriodSeconds`) and an
/// unknown platform (Cloud Run: 10 s; ECS: 30 s; Nomad: 5 s; systemd: 90 s; see
/// [`Platform`]).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Default per-hook timeout (Nomad: 2 s; see [`Platform`]).
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the automatic safety margin (see [`Config::safety_margin`]).
pub const MAX_AUTO_SAFETY_MARGIN: Duration = Duration::from_secs(2);

/// The longest grace period accepted (`LAMEDUCK_GRACE_PERIOD`, [`Builder::grace_period`]):
/// 24 hours. Kubernetes' `terminationGracePeriodSeconds` is in practice seconds to a few
/// hours (default 30 s; long drains of stateful workloads reach hours), so a day leaves
/// room for every real deployment while keeping each deadline far inside what the clock
/// can represent: a value such as `18446744073709551615s` or `500000000000y` parses, but
/// adding it to the current instant overflows the clock and would panic in the shutdown
/// sequence. A longer value is a [`ConfigError::DurationTooLong`].
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest lame-duck delay accepted (`LAMEDUCK_SHUTDOWN_DELAY`,
/// [`Builder::shutdown_delay`]): [`MAX_GRACE_PERIOD`], 24 hours. Whatever is still pending
/// at the deadline (inside the grace period) is abandoned, so a longer delay could never
/// take effect.
pub const MAX_SHUTDOWN_DELAY: Duration = MAX_GRACE_PERIOD;
/// The longest drain timeout accepted (`LAMEDUCK_DRAIN_TIMEOUT`,
/// [`Builder::drain_timeout`]): [`MAX_GRACE_PERIOD`], 24 hours, for the same reason as
/// [`MAX_SHUTDOWN_DELAY`].
pub const MAX_DRAIN_TIMEOUT: Duration = MAX_GRACE_PERIOD;
/// The longest hook timeout accepted (`LAMEDUCK_HOOK_TIMEOUT`, [`Builder::hook_timeout`],
/// and [`Hook::timeout`](crate::Hook::timeout), which caps at it): [`MAX_GRACE_PERIOD`],
/// 24 hours. Shutdown hooks end at the deadline anyway; a startup hook that may take a
/// day is a stuck hook.
pub const MAX_HOOK_TIMEOUT: Duration = MAX_GRACE_PERIOD;

/// A configuration value that cannot be used. Its message names the variable (or setting)
/// and the value, so a bad deployment fails at start with a line an operator can act on.
#[derive(thiserror::Error)]
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
    /// A duration parsed (or was given in code) but is longer than its bound
    /// ([`MAX_GRACE_PERIOD`], [`MAX_SHUTDOWN_DELAY`], [`MAX_DRAIN_TIMEOUT`],
    /// [`MAX_HOOK_TIMEOUT`]).
    #[error("{setting}={value:?} is too long: at most {max} ({max_secs}s) is accepted")]
    DurationTooLong {
        /// The variable's name (`LAMEDUCK_GRACE_PERIOD`), or the builder setting's
        /// (`grace_period`) for a value given in code.
        setting: &'static str,
        /// The value as found in the variable, or the `Debug` form of the `Duration`
        /// given in code (`18446744073709551615s`).
        value: String,
        /// The bound.
        max: humantime::FormattedDuration,
        /// The bound in whole seconds.
        max_secs: u64,
    },
    /// A signal was listed twice in [`Builder::signals`].
    #[error("signal {0} is listed twice")]
    DuplicateSignal(Signal),
}

/// The message, as for `Display`: `main` returning `Result<_, ConfigError>` prints
/// `Error: ` and this when `?` fails.
impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
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
                "environment variable {name} is not a lameduck setting (known: {}, {})",
                ENV_VARS.join(", "),
                ADMIN_ENV_VARS.join(", ")
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
    pub(crate) termination_log: Option<PathBuf>,
    pub(crate) signals: Vec<Signal>,
    pub(crate) force_on_second_signal: bool,
    pub(crate) exit_process: bool,
    pub(crate) concurrent_phases: Vec<crate::Phase>,
    pub(crate) warnings: Vec<ConfigWarning>,
    /// Where to send systemd's notifications, if anywhere (`systemd.rs`).
    pub(crate) sd_notify: Option<crate::systemd::Settings>,
    pub(crate) platform: Platform,
    /// What told the platform: the variable found, `Builder::platform`, or nothing.
    pub(crate) platform_source: &'static str,
    /// Where each budget setting came from, for the start-up log line.
    pub(crate) origins: Origins,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The platform's default (logged as `platform`).
    Platform,
    /// A `LAMEDUCK_*` variable.
    Env(&'static str),
    /// The builder, in code.
    Code,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Platform => f.write_str("platform"),
            Self::Env(var) => f.write_str(var),
            Self::Code => f.write_str("code"),
        }
    }
}

/// Where each setting of the budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origins {
    pub(crate) shutdown_delay: Origin,
    pub(crate) drain_timeout: Origin,
    pub(crate) grace_period: Origin,
    pub(crate) hook_timeout: Origin,
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
    /// The platform the defaults were chosen for: detected from the environment (see
    /// [`Platform`] for the variables and their order), or given with
    /// [`Builder::platform`].
    pub fn platform(&self) -> Platform {
        self.platform
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
    shutdown_delay: Option<(Duration, Origin)>,
    drain_timeout: Option<(Duration, Origin)>,
    grace_period: Option<(Duration, Origin)>,
    safety_margin: Option<Duration>,
    hook_timeout: Option<(Duration, Origin)>,
    platform: PlatformSource,
    termination_log: TerminationLog,
    signals: Vec<Signal>,
    force_on_second_signal: bool,
    exit_process: bool,
    concurrent_phases: Vec<crate::Phase>,
    unknown_vars: Vec<String>,
    sd_notify: crate::systemd::Source,
}

/// How the platform is known.
#[derive(Debug, Clone, Copy)]
enum PlatformSource {
    /// Detected from the process environment when the configuration is validated.
    Process,
    /// Detected through `Builder::from_lookup`'s function (the variable that told it).
    Lookup(Platform, Option<&'static str>),
    /// `Builder::platform`.
    Given(Platform),
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
            drain_timeout: None,
            grace_period: None,
            safety_margin: None,
            hook_timeout: None,
            platform: PlatformSource::Process,
            termination_log: TerminationLog::Auto,
            signals: vec![Signal::Term, Signal::Int],
            force_on_second_signal: true,
            exit_process: true,
            concurrent_phases: Vec::new(),
            unknown_vars: Vec::new(),
            sd_notify: crate::systemd::Source::default(),
        }
    }
}

impl Builder {
    /// Defaults, overridden by the `LAMEDUCK_*` variables of the process environment.
    /// A bad value is an error naming the variable and the value; so is a duration longer
    /// than its bound ([`MAX_GRACE_PERIOD`] and siblings, 24 h each).
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
            .filter(|name| name.starts_with("LAMEDUCK_") && !is_known_variable(name))
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
        // Bounded here, where it is parsed: a duration that parses can still be too long
        // for the clock (`500000000000y`), and would panic once added to an instant.
        let duration =
            |var: &'static str, max: Duration| -> Result<Option<Duration>, ConfigError> {
                let Some(value) = read(var)? else {
                    return Ok(None);
                };
                match humantime::parse_duration(value.trim()) {
                    Ok(d) if d <= max => Ok(Some(d)),
                    Ok(_) => Err(too_long(var, value, max)),
                    Err(source) => Err(ConfigError::InvalidDuration { var, value, source }),
                }
            };
        let from_env = |var: &'static str, max| {
            Ok::<_, ConfigError>(duration(var, max)?.map(|d| (d, Origin::Env(var))))
        };
        builder.shutdown_delay = from_env(ENV_SHUTDOWN_DELAY, MAX_SHUTDOWN_DELAY)?;
        builder.drain_timeout = from_env(ENV_DRAIN_TIMEOUT, MAX_DRAIN_TIMEOUT)?;
        builder.grace_period = from_env(ENV_GRACE_PERIOD, MAX_GRACE_PERIOD)?;
        builder.hook_timeout = from_env(ENV_HOOK_TIMEOUT, MAX_HOOK_TIMEOUT)?;
        if let Some(path) = read(ENV_TERMINATION_LOG)? {
            builder.termination_log = if path == "none" {
                TerminationLog::Off
            } else {
                TerminationLog::Path(PathBuf::from(path))
            };
        }
        builder.sd_notify = crate::systemd::Source::Lookup(crate::systemd::Env::read(&lookup));
        let platform = Platform::detect(&lookup);
        builder.platform = PlatformSource::Lookup(platform, platform.detected_by(&lookup));
        Ok(builder)
    }

    /// Lame-duck time between the trigger and closing listeners. Default: the
    /// platform's ([`Platform`]): 5 s on Kubernetes (`KUBERNETES_SERVICE_HOST` is set, the
    /// process runs in a pod), else 0. At most [`MAX_SHUTDOWN_DELAY`] (24 h): a longer one
    /// makes [`config`](Self::config) and [`build`](Self::build) fail with
    /// [`ConfigError::DurationTooLong`] naming `shutdown_delay`.
    pub fn shutdown_delay(mut self, delay: Duration) -> Self {
        self.shutdown_delay = Some((delay, Origin::Code));
        self
    }
    /// How long in-flight requests and tracked tasks may take once listeners are closed.
    /// Default: the platform's ([`Platform`]): 20 s, 7 s on Cloud Run, 3 s on Nomad. At
    /// most [`MAX_DRAIN_TIMEOUT`] (24 h): a longer one makes [`config`](Self::config) and
    /// [`build`](Self::build) fail with [`ConfigError::DurationTooLong`] naming
    /// `drain_timeout`.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = Some((timeout, Origin::Code));
        self
    }
    /// The platform's grace period. Default: the platform's ([`Platform`]): 30 s, 10 s on
    /// Cloud Run, 5 s on Nomad, 90 s under systemd. At most [`MAX_GRACE_PERIOD`] (24 h): a
    /// longer one makes [`config`](Self::config) and [`build`](Self::build) fail with
    /// [`ConfigError::DurationTooLong`] naming `grace_period`.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = Some((grace, Origin::Code));
        self
    }
    /// Choose the defaults for `platform` instead of detecting it from the environment
    /// (the variables of [`Platform`]). Settings given in code or by `LAMEDUCK_*`
    /// variables still win over its defaults. It changes nothing else: systemd's
    /// notifications follow `NOTIFY_SOCKET` (see [`no_sd_notify`](Self::no_sd_notify)).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = PlatformSource::Given(platform);
        self
    }
    /// Time kept free before the platform's SIGKILL. Default: a tenth of the grace period,
    /// at most 2 s. It must be shorter than the grace period (so it is bounded by
    /// [`MAX_GRACE_PERIOD`] too).
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = Some(margin);
        self
    }
    /// Default per-hook timeout. Default: the platform's ([`Platform`]): 5 s, 2 s on
    /// Nomad. At most [`MAX_HOOK_TIMEOUT`] (24 h): a longer one makes
    /// [`config`](Self::config) and [`build`](Self::build) fail with
    /// [`ConfigError::DurationTooLong`] naming `hook_timeout`.
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.hook_timeout = Some((timeout, Origin::Code));
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
    /// Send systemd nothing, even when `NOTIFY_SOCKET` is set. By default, when it is
    /// (a `Type=notify` unit), [`Lifecycle::run`](crate::Lifecycle::run) sends `READY=1`,
    /// `STOPPING=1`, `STATUS=` lines, watchdog pings and stop-timeout extensions as the
    /// state changes (docs/platform.md).
    pub fn no_sd_notify(mut self) -> Self {
        self.sd_notify = crate::systemd::Source::Off;
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
    /// ones) without building a lifecycle. A duration longer than its bound
    /// ([`MAX_SHUTDOWN_DELAY`], [`MAX_DRAIN_TIMEOUT`], [`MAX_GRACE_PERIOD`],
    /// [`MAX_HOOK_TIMEOUT`]) is a [`ConfigError::DurationTooLong`] naming the setting.
    pub fn config(self) -> Result<Config, ConfigError> {
        // Values from the environment were bounded when parsed; these catch the ones
        // given in code, before any of them is added to an instant.
        let bounded = [
            ("shutdown_delay", self.shutdown_delay, MAX_SHUTDOWN_DELAY),
            ("drain_timeout", self.drain_timeout, MAX_DRAIN_TIMEOUT),
            ("grace_period", self.grace_period, MAX_GRACE_PERIOD),
            ("hook_timeout", self.hook_timeout, MAX_HOOK_TIMEOUT),
        ];
        for (setting, value, max) in bounded {
            if let Some((value, _)) = value
                && value > max
            {
                return Err(too_long(setting, format!("{value:?}"), max));
            }
        }
        // The platform chooses each default that neither a variable nor code set.
        let (platform, platform_source) = match self.platform {
            PlatformSource::Process => {
                let env = |name: &str| std::env::var_os(name);
                let platform = Platform::detect(env);
                (platform, platform.detected_by(env))
            }
            PlatformSource::Lookup(platform, var) => (platform, var),
            PlatformSource::Given(platform) => (platform, Some("Builder::platform")),
        };
        let budget = platform.budget();
        let or_platform = |setting: Option<(Duration, Origin)>, default| {
            setting.unwrap_or((default, Origin::Platform))
        };
        let (shutdown_delay, shutdown_delay_origin) =
            or_platform(self.shutdown_delay, budget.shutdown_delay);
        let (drain_timeout, drain_timeout_origin) =
            or_platform(self.drain_timeout, budget.drain_timeout);
        let (grace_period, grace_period_origin) =
            or_platform(self.grace_period, budget.grace_period);
        let (hook_timeout, hook_timeout_origin) =
            or_platform(self.hook_timeout, budget.hook_timeout);
        let safety_margin = self
            .safety_margin
            .unwrap_or_else(|| (grace_period / 10).min(MAX_AUTO_SAFETY_MARGIN));
        if grace_period.is_zero() || safety_margin >= grace_period {
            return Err(ConfigError::GracePeriodTooShort {
                grace_period: humantime::format_duration(grace_period),
                safety_margin: humantime::format_duration(safety_margin),
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
                // Opening without `create` keeps us from making a file in /dev outside a pod;
                // without blocking, so that a FIFO there cannot hang the start.
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(default)
                    .ok()
                    .map(|_| default.to_path_buf())
            }
        };
        let deadline = grace_period - safety_margin;
        let mut warnings: Vec<ConfigWarning> = self
            .unknown_vars
            .into_iter()
            .map(ConfigWarning::UnknownVariable)
            .collect();
        let needed = shutdown_delay.saturating_add(drain_timeout);
        if needed > deadline {
            warnings.push(ConfigWarning::DrainExceedsDeadline { needed, deadline });
        }
        if hook_timeout > deadline {
            warnings.push(ConfigWarning::HookTimeoutExceedsDeadline {
                hook_timeout,
                deadline,
            });
        }
        for warning in &warnings {
            tracing::warn!(%warning, "lameduck configuration");
        }
        Ok(Config {
            shutdown_delay,
            drain_timeout,
            grace_period,
            safety_margin,
            hook_timeout,
            termination_log,
            signals: self.signals,
            force_on_second_signal: self.force_on_second_signal,
            exit_process: self.exit_process,
            concurrent_phases: self.concurrent_phases,
            warnings,
            sd_notify: self.sd_notify.settings(),
            platform,
            platform_source: platform_source.unwrap_or("none"),
            origins: Origins {
                shutdown_delay: shutdown_delay_origin,
                drain_timeout: drain_timeout_origin,
                grace_period: grace_period_origin,
                hook_timeout: hook_timeout_origin,
            },
        })
    }

    /// Validate the settings and create the [`Lifecycle`](crate::Lifecycle).
    pub fn build(self) -> Result<crate::Lifecycle, ConfigError> {
        Ok(crate::Lifecycle::with_config(self.config()?))
    }
}

fn too_long(setting: &'static str, value: String, max: Duration) -> ConfigError {
    ConfigError::DurationTooLong {
        setting,
        value,
        max: humantime::format_duration(max),
        max_secs: max.as_secs(),
    }
}

/// Print a configuration error to stderr and exit with status 78 (`EX_CONFIG`), for a
/// service whose supervisor tells a bad configuration from a crash by that status.
/// Otherwise `?` in a `main` that returns `Result<_, ConfigError>` is enough: it prints
/// the same message after `Error: ` and exits 1 (stable Rust fixes the status of an `Err`
/// returned from `main` at 1).
///
/// It takes any error, so the admin endpoints' configuration errors
/// (`lameduck_axum::AdminError`) can go the same way.
///
/// ```no_run
/// let lifecycle = lameduck::Lifecycle::from_env()
///     .unwrap_or_else(|e| lameduck::exit_on_config_error(e));
/// # let _ = lifecycle;
/// ```
pub fn exit_on_config_error(error: impl fmt::Display) -> ! {
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
            (ENV_TERMINATION_LOG, "/tmp/report.json"),
        ]))
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(config.shutdown_delay(), Duration::from_millis(250));
        assert_eq!(config.drain_timeout(), Duration::from_secs(7));
        assert_eq!(config.grace_period(), Duration::from_secs(60));
        assert_eq!(config.hook_timeout(), Duration::from_secs(3));
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
        ];
        for (var, value) in cases {
            let err = Builder::from_lookup(lookup(&[(var, value)])).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(var), "{message} should name {var}");
            assert!(message.contains(value), "{message} should quote {value}");
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

    /// Each platform's variable, and the defaults it brings: delay, grace, drain, hook.
    const PLATFORMS: [(&str, Platform, [u64; 4]); 7] = [
        (
            "KUBERNETES_SERVICE_HOST",
            Platform::Kubernetes,
            [5, 30, 20, 5],
        ),
        ("K_SERVICE", Platform::CloudRun, [0, 10, 7, 5]),
        (
            "ECS_CONTAINER_METADATA_URI_V4",
            Platform::Ecs,
            [0, 30, 20, 5],
        ),
        ("NOMAD_ALLOC_ID", Platform::Nomad, [0, 5, 3, 2]),
        ("NOTIFY_SOCKET", Platform::Systemd, [0, 90, 20, 5]),
        ("INVOCATION_ID", Platform::Systemd, [0, 90, 20, 5]),
        ("NO_PLATFORM_VARIABLE", Platform::Unknown, [0, 30, 20, 5]),
    ];

    fn budget_of(config: &Config) -> [u64; 4] {
        [
            config.shutdown_delay(),
            config.grace_period(),
            config.drain_timeout(),
            config.hook_timeout(),
        ]
        .map(|d| d.as_secs())
    }

    #[test]
    fn each_platform_brings_its_budget_without_warnings() {
        for (var, platform, budget) in PLATFORMS {
            // A socket path systemd would give; the others only need to be set.
            let config = Builder::from_lookup(lookup(&[(var, "/run/systemd/notify")]))
                .unwrap()
                .no_sd_notify()
                .config()
                .unwrap();
            assert_eq!(config.platform(), platform, "{var}");
            assert_eq!(budget_of(&config), budget, "{var}");
            assert!(
                config.warnings().is_empty(),
                "{var}: {:?}",
                config.warnings()
            );
            assert!(
                config.shutdown_delay() + config.drain_timeout() <= config.deadline(),
                "{var}"
            );
            assert!(config.hook_timeout() <= config.deadline(), "{var}");
            let from_platform = Origin::Platform;
            assert_eq!(
                config.origins,
                Origins {
                    shutdown_delay: from_platform,
                    drain_timeout: from_platform,
                    grace_period: from_platform,
                    hook_timeout: from_platform,
                }
            );
            let expected_source = if platform == Platform::Unknown {
                "none"
            } else {
                var
            };
            assert_eq!(config.platform_source, expected_source);
        }
    }

    #[test]
    fn a_given_platform_brings_the_same_budget_without_warnings() {
        for (_, platform, budget) in PLATFORMS {
            let config = Builder::default()
                .platform(platform)
                .no_sd_notify()
                .config()
                .unwrap();
            assert_eq!(config.platform(), platform);
            assert_eq!(budget_of(&config), budget, "{platform}");
            assert!(
                config.warnings().is_empty(),
                "{platform}: {:?}",
                config.warnings()
            );
            assert_eq!(config.platform_source, "Builder::platform");
        }
        // Given in code, it wins over what the variables say.
        let config = Builder::from_lookup(lookup(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]))
            .unwrap()
            .platform(Platform::Nomad)
            .config()
            .unwrap();
        assert_eq!(config.platform(), Platform::Nomad);
        assert_eq!(budget_of(&config), [0, 5, 3, 2]);
    }

    #[test]
    fn explicit_variables_win_on_every_platform() {
        for (var, platform, _) in PLATFORMS {
            let config = Builder::from_lookup(lookup(&[
                (var, "x"),
                (ENV_SHUTDOWN_DELAY, "1s"),
                (ENV_GRACE_PERIOD, "1m"),
                (ENV_DRAIN_TIMEOUT, "40s"),
                (ENV_HOOK_TIMEOUT, "3s"),
            ]))
            .unwrap()
            .no_sd_notify()
            .config()
            .unwrap();
            assert_eq!(config.platform(), platform, "{var}");
            assert_eq!(budget_of(&config), [1, 60, 40, 3], "{var}");
            assert_eq!(config.origins.grace_period, Origin::Env(ENV_GRACE_PERIOD));
            assert_eq!(
                config.origins.shutdown_delay,
                Origin::Env(ENV_SHUTDOWN_DELAY)
            );
            assert_eq!(config.origins.drain_timeout, Origin::Env(ENV_DRAIN_TIMEOUT));
            assert_eq!(config.origins.hook_timeout, Origin::Env(ENV_HOOK_TIMEOUT));
            // And code wins over both.
            let config = Builder::from_lookup(lookup(&[(var, "x"), (ENV_GRACE_PERIOD, "1m")]))
                .unwrap()
                .grace_period(Duration::from_secs(45))
                .config()
                .unwrap();
            assert_eq!(config.grace_period(), Duration::from_secs(45));
            assert_eq!(config.origins.grace_period, Origin::Code);
        }
    }

    #[test]
    fn one_explicit_variable_leaves_the_other_platform_defaults() {
        // Nomad with a kill_timeout of 30 s: the grace period follows the variable, the
        // drain and hook timeouts stay Nomad's.
        let config = Builder::from_lookup(lookup(&[
            ("NOMAD_ALLOC_ID", "5b1f3c4e"),
            (ENV_GRACE_PERIOD, "30s"),
        ]))
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(budget_of(&config), [0, 30, 3, 2]);
        assert_eq!(config.origins.grace_period, Origin::Env(ENV_GRACE_PERIOD));
        assert_eq!(config.origins.drain_timeout, Origin::Platform);
        // Cloud Run with a lame duck after all.
        let config = Builder::from_lookup(lookup(&[
            ("K_SERVICE", "orders"),
            (ENV_SHUTDOWN_DELAY, "2s"),
        ]))
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(budget_of(&config), [2, 10, 7, 5]);
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    }

    #[test]
    fn the_first_platform_in_the_documented_order_wins() {
        let cases: &[(&[&str], Platform)] = &[
            // Knative on Kubernetes sets both: its pods stop the Kubernetes way.
            (
                &["K_SERVICE", "KUBERNETES_SERVICE_HOST"],
                Platform::Kubernetes,
            ),
            (
                &["K_SERVICE", "ECS_CONTAINER_METADATA_URI_V4"],
                Platform::CloudRun,
            ),
            (
                &["ECS_CONTAINER_METADATA_URI_V4", "NOMAD_ALLOC_ID"],
                Platform::Ecs,
            ),
            // A container platform wins over systemd variables inherited from the host.
            (
                &["NOMAD_ALLOC_ID", "INVOCATION_ID", "NOTIFY_SOCKET"],
                Platform::Nomad,
            ),
            (&["INVOCATION_ID", "NOTIFY_SOCKET"], Platform::Systemd),
        ];
        for (vars, platform) in cases {
            let pairs: Vec<(&str, &str)> = vars.iter().map(|v| (*v, "x")).collect();
            let config = Builder::from_lookup(lookup(&pairs))
                .unwrap()
                .no_sd_notify()
                .config()
                .unwrap();
            assert_eq!(config.platform(), *platform, "{vars:?}");
            let (_, _, budget) = PLATFORMS.iter().find(|(_, p, _)| p == platform).unwrap();
            assert_eq!(budget_of(&config), *budget, "{vars:?}");
        }
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
    fn duplicate_signal_is_an_error() {
        let err = Builder::default()
            .signals([Signal::Term, Signal::Term])
            .config()
            .unwrap_err();
        assert!(err.to_string().contains("SIGTERM"));
    }

    /// The duration variables `from_env()` reads, with their bounds.
    const DURATION_VARS: [(&str, Duration); 4] = [
        (ENV_SHUTDOWN_DELAY, MAX_SHUTDOWN_DELAY),
        (ENV_DRAIN_TIMEOUT, MAX_DRAIN_TIMEOUT),
        (ENV_GRACE_PERIOD, MAX_GRACE_PERIOD),
        (ENV_HOOK_TIMEOUT, MAX_HOOK_TIMEOUT),
    ];

    /// The builder's duration settings, with the names their errors give and their bounds.
    type Setter = fn(Builder, Duration) -> Builder;
    const DURATION_SETTINGS: [(&str, Setter, Duration); 4] = [
        (
            "shutdown_delay",
            Builder::shutdown_delay,
            MAX_SHUTDOWN_DELAY,
        ),
        ("drain_timeout", Builder::drain_timeout, MAX_DRAIN_TIMEOUT),
        ("grace_period", Builder::grace_period, MAX_GRACE_PERIOD),
        ("hook_timeout", Builder::hook_timeout, MAX_HOOK_TIMEOUT),
    ];

    #[test]
    fn durations_past_their_bound_are_rejected_naming_variable_and_value() {
        for (var, max) in DURATION_VARS {
            let just_above = format!("{}ms", max.as_millis() + 1);
            for value in [
                "18446744073709551615s",
                "500000000000y",
                "1day 1ns",
                just_above.as_str(),
            ] {
                let err = Builder::from_lookup(lookup(&[(var, value)]))
                    .and_then(Builder::config)
                    .map(|config| format!("accepted: {config:?}"))
                    .unwrap_err();
                let message = err.to_string();
                assert!(
                    message.contains(&format!("{var}={value:?}")),
                    "{message} should name {var} and quote {value}"
                );
                assert!(
                    message.contains(&format!("({}s)", max.as_secs())),
                    "{message} should state the bound"
                );
                assert!(
                    matches!(err, ConfigError::DurationTooLong { .. }),
                    "{err:?}"
                );
            }
        }
    }

    #[test]
    fn durations_at_their_bound_are_accepted() {
        for (var, max) in DURATION_VARS {
            for value in [format!("{}s", max.as_secs()), "24h".to_owned()] {
                let config = Builder::from_lookup(lookup(&[(var, &value)]))
                    .and_then(Builder::config)
                    .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
                let read = match var {
                    ENV_SHUTDOWN_DELAY => config.shutdown_delay(),
                    ENV_DRAIN_TIMEOUT => config.drain_timeout(),
                    ENV_GRACE_PERIOD => config.grace_period(),
                    _ => config.hook_timeout(),
                };
                assert_eq!(read, max, "{var}={value}");
            }
        }
        // All at once, too.
        let all: Vec<(&str, String)> = DURATION_VARS
            .iter()
            .map(|(var, max)| (*var, format!("{}s", max.as_secs())))
            .collect();
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config = Builder::from_lookup(lookup(&all))
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(config.deadline(), MAX_GRACE_PERIOD - MAX_AUTO_SAFETY_MARGIN);
    }

    #[test]
    fn builder_durations_past_their_bound_are_rejected_naming_the_setting() {
        for (setting, set, max) in DURATION_SETTINGS {
            for value in [
                Duration::MAX,
                Duration::from_secs(u64::MAX),
                max + Duration::from_nanos(1),
            ] {
                let err = set(Builder::default(), value).config().unwrap_err();
                let message = err.to_string();
                assert!(
                    message.contains(&format!("{setting}=\"{value:?}\"")),
                    "{message} should name {setting} and give {value:?}"
                );
                assert!(
                    message.contains(&format!("({}s)", max.as_secs())),
                    "{message} should state the bound"
                );
                assert!(set(Builder::default(), value).build().is_err());
            }
            // At the bound: accepted, with a grace period long enough to hold it.
            let builder = Builder::default().grace_period(MAX_GRACE_PERIOD);
            assert!(set(builder, max).config().is_ok(), "{setting} at {max:?}");
        }
    }

    #[test]
    fn accepted_durations_cannot_overflow_the_clock() {
        let config = Builder::default()
            .shutdown_delay(MAX_SHUTDOWN_DELAY)
            .drain_timeout(MAX_DRAIN_TIMEOUT)
            .grace_period(MAX_GRACE_PERIOD)
            .hook_timeout(MAX_HOOK_TIMEOUT)
            .config()
            .unwrap();
        let now = tokio::time::Instant::now();
        for d in [
            config.shutdown_delay(),
            config.drain_timeout(),
            config.grace_period(),
            config.deadline(),
            config.hook_timeout(),
        ] {
            assert_eq!(crate::clock::deadline_after(now, d), now + d);
        }
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

/// Property tests of configuration parsing: whatever the environment holds, parsing and
/// validation never panic; what is accepted cannot overflow the clock; what is rejected
/// says which variable (or setting) is wrong.
#[cfg(test)]
mod properties {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config as ProptestConfig;

    /// Fixed budget: a few seconds in CI, and no regression files in the source tree.
    fn budget() -> ProptestConfig {
        ProptestConfig {
            cases: 768,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    const UNITS: &[&str] = &[
        "", "ns", "us", "ms", "s", "sec", "m", "min", "h", "hr", "hours", "d", "day", "days", "w",
        "week", "M", "month", "y", "year", "years",
    ];

    /// Numbers from everywhere: small, around the bounds in each unit, and up to `u64::MAX`.
    fn number() -> BoxedStrategy<u64> {
        prop_oneof![
            0..100u64,
            0..=2 * MAX_GRACE_PERIOD.as_secs(),
            (MAX_GRACE_PERIOD.as_millis() as u64 - 2)..(MAX_GRACE_PERIOD.as_millis() as u64 + 2),
            any::<u64>(),
            Just(u64::MAX),
            Just(500_000_000_000),
        ]
        .boxed()
    }

    /// What a duration variable may hold: humantime durations of one or several parts
    /// (most parse, many are out of bounds), and arbitrary text.
    fn duration_text() -> impl Strategy<Value = String> {
        let part = (number(), proptest::sample::select(UNITS)).prop_map(|(n, u)| format!("{n}{u}"));
        prop_oneof![
            3 => part.clone(),
            2 => proptest::collection::vec(part, 1..4).prop_map(|parts| parts.join(" ")),
            1 => (number(), proptest::sample::select(UNITS))
                .prop_map(|(n, u)| format!("  {n} {u} ")),
            2 => any::<String>(),
        ]
    }

    /// What any other variable may hold: plausible values and arbitrary text.
    fn other_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("127.0.0.1:9090".to_owned()),
            Just("[::1]:0".to_owned()),
            Just("none".to_owned()),
            Just("s3cret-token".to_owned()),
            Just("/tmp/lameduck-proptest-report.json".to_owned()),
            any::<String>(),
        ]
    }

    fn environment() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        let value = |var: &'static str| -> BoxedStrategy<Option<String>> {
            if [
                ENV_SHUTDOWN_DELAY,
                ENV_DRAIN_TIMEOUT,
                ENV_GRACE_PERIOD,
                ENV_HOOK_TIMEOUT,
            ]
            .contains(&var)
            {
                proptest::option::weighted(0.7, duration_text()).boxed()
            } else {
                proptest::option::weighted(0.3, other_text()).boxed()
            }
        };
        ENV_VARS
            .map(|var| value(var).prop_map(move |v| v.map(|v| (var, v))))
            .prop_map(|vars| vars.into_iter().flatten().collect())
    }

    fn lookup_in<'a>(env: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    /// Every duration of an accepted configuration is within its bound, and adding it to
    /// the current instant cannot overflow the clock.
    fn assert_fits_the_clock(config: &Config) -> Result<(), TestCaseError> {
        let now = tokio::time::Instant::now();
        let std_now = std::time::Instant::now();
        for (what, d, max) in [
            (
                "shutdown_delay",
                config.shutdown_delay(),
                MAX_SHUTDOWN_DELAY,
            ),
            ("drain_timeout", config.drain_timeout(), MAX_DRAIN_TIMEOUT),
            ("grace_period", config.grace_period(), MAX_GRACE_PERIOD),
            ("deadline", config.deadline(), MAX_GRACE_PERIOD),
            ("safety_margin", config.safety_margin(), MAX_GRACE_PERIOD),
            ("hook_timeout", config.hook_timeout(), MAX_HOOK_TIMEOUT),
        ] {
            prop_assert!(d <= max, "{what} {d:?} is over {max:?}");
            prop_assert!(now.checked_add(d).is_some(), "now + {what} {d:?} overflows");
            prop_assert!(std_now.checked_add(d).is_some());
            prop_assert_eq!(crate::clock::deadline_after(now, d), now + d);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(budget())]

        /// One duration variable at a time: never a panic; accepted means bounded and
        /// addable to now; rejected names that variable (and quotes the value, unless the
        /// grace period parsed but is too short for the margin).
        #[test]
        fn one_duration_variable(
            var in proptest::sample::select(&[
                ENV_SHUTDOWN_DELAY,
                ENV_DRAIN_TIMEOUT,
                ENV_GRACE_PERIOD,
                ENV_HOOK_TIMEOUT,
            ][..]),
            value in duration_text(),
        ) {
            let env = [(var, value.clone())];
            match Builder::from_lookup(lookup_in(&env)).and_then(Builder::config) {
                Ok(config) => assert_fits_the_clock(&config)?,
                Err(err) => {
                    let message = err.to_string();
                    prop_assert!(message.contains(var), "{} does not name {}", message, var);
                    if !matches!(err, ConfigError::GracePeriodTooShort { .. }) {
                        prop_assert!(
                            message.contains(&format!("{var}={value:?}"))
                                || matches!(err, ConfigError::Empty { .. }),
                            "{} does not quote {:?}", message, value
                        );
                    }
                }
            }
        }

        /// Any combination of every variable: never a panic; accepted means bounded;
        /// rejected names one of the variables that were set.
        #[test]
        fn whole_environment(env in environment()) {
            match Builder::from_lookup(lookup_in(&env)).and_then(Builder::config) {
                Ok(config) => assert_fits_the_clock(&config)?,
                Err(err) => {
                    let message = err.to_string();
                    prop_assert!(
                        env.iter().any(|(var, _)| message.contains(var)),
                        "{} names none of {:?}", message, env
                    );
                }
            }
        }

        /// Arbitrary durations given in code: never a panic; accepted means bounded;
        /// rejected names the setting that is out of bounds, or the grace period.
        #[test]
        fn builder_durations(
            durations in proptest::array::uniform5(prop_oneof![
                2 => (0..=2 * MAX_GRACE_PERIOD.as_nanos() as u64).prop_map(Duration::from_nanos),
                1 => (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
                1 => Just(Duration::MAX),
                1 => Just(MAX_GRACE_PERIOD),
                1 => Just(MAX_GRACE_PERIOD + Duration::from_nanos(1)),
            ]),
            margin in any::<bool>(),
        ) {
            let [delay, drain, grace, hook, safety] = durations;
            let mut builder = Builder::default()
                .shutdown_delay(delay)
                .drain_timeout(drain)
                .grace_period(grace)
                .hook_timeout(hook);
            if margin {
                builder = builder.safety_margin(safety);
            }
            match builder.config() {
                Ok(config) => assert_fits_the_clock(&config)?,
                Err(ConfigError::DurationTooLong { setting, value, .. }) => {
                    let given = match setting {
                        "shutdown_delay" => delay,
                        "drain_timeout" => drain,
                        "grace_period" => grace,
                        "hook_timeout" => hook,
                        other => return Err(TestCaseError::fail(format!("unknown setting {other}"))),
                    };
                    prop_assert!(given > MAX_GRACE_PERIOD);
                    prop_assert_eq!(value, format!("{given:?}"));
                }
                Err(ConfigError::GracePeriodTooShort { .. }) => {
                    prop_assert!(grace.is_zero() || (margin && safety >= grace));
                }
                Err(other) => prop_assert!(false, "unexpected error {}", other),
            }
        }
    }
}
