//! Where the process runs, as far as the environment tells, and the shutdown budget that
//! platform documents: the defaults of the lame-duck delay, the grace period, the drain
//! timeout and the hook timeout (docs/platform.md).
//!
//! The table and the reasons are on [`Platform`].

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

/// The platform the process runs on, as detected from its environment (or given with
/// [`Builder::platform`](crate::Builder::platform)); it chooses the defaults of the
/// shutdown budget (docs/platform.md in the repository has the sources).
///
/// Detection reads one variable per platform, through the same lookup as the `LAMEDUCK_*`
/// variables ([`Builder::from_env`](crate::Builder::from_env), or
/// [`Builder::from_lookup`](crate::Builder::from_lookup)'s function), in this order; the
/// first that is set wins:
///
/// | order | platform | detected by | stop signal | the platform's budget | delay | grace | drain | hook |
/// |---|---|---|---|---|---|---|---|---|
/// | 1 | [`Kubernetes`](Self::Kubernetes) | `KUBERNETES_SERVICE_HOST` | SIGTERM (after `preStop`) | `terminationGracePeriodSeconds`, default 30 s | 5 s | 30 s | 20 s | 5 s |
/// | 2 | [`CloudRun`](Self::CloudRun) | `K_SERVICE` | SIGTERM | 10 s, then SIGKILL | 0 | 10 s | 7 s | 5 s |
/// | 3 | [`Ecs`](Self::Ecs) | `ECS_CONTAINER_METADATA_URI_V4` | SIGTERM (`STOPSIGNAL`) | `stopTimeout`, default 30 s | 0 | 30 s | 20 s | 5 s |
/// | 4 | [`Nomad`](Self::Nomad) | `NOMAD_ALLOC_ID` | `kill_signal`, default SIGINT (SIGTERM with Docker) | `kill_timeout`, default 5 s | 0 | 5 s | 3 s | 2 s |
/// | 5 | [`Systemd`](Self::Systemd) | `NOTIFY_SOCKET` or `INVOCATION_ID` | `KillSignal=`, default SIGTERM | `TimeoutStopSec=`, default 90 s | 0 | 90 s | 20 s | 5 s |
/// | 6 | [`Unknown`](Self::Unknown) | none of these | | | 0 | 30 s | 20 s | 5 s |
///
/// Plain Docker (`docker stop`: SIGTERM, SIGKILL 10 s later) sets no variable of its own
/// and is [`Unknown`](Self::Unknown): match it with `LAMEDUCK_GRACE_PERIOD=10s
/// LAMEDUCK_DRAIN_TIMEOUT=7s`. When the lifecycle is built, one info line (`shutdown
/// budget`) gives the platform, what detected it, and each of these four settings with
/// where it came from (`platform`, the `LAMEDUCK_*` variable, or `code`).
///
/// Each `LAMEDUCK_*` variable that is set (and each setting given in code) replaces that
/// one default; the others keep the platform's. The defaults of every platform fit
/// together: the delay plus the drain, and the hook timeout, end before the deadline
/// (`grace - safety margin`), so they draw no configuration warning.
///
/// Why this order: `KUBERNETES_SERVICE_HOST` is set in every pod, whatever else runs there
/// (Knative sets `K_SERVICE` too, and its pods are stopped the Kubernetes way, with
/// `terminationGracePeriodSeconds`, so Kubernetes comes first; Cloud Run sets `K_SERVICE`
/// but no `KUBERNETES_SERVICE_HOST`). The container platforms come before systemd because
/// systemd's variables are inherited: a container engine started by a unit, or a shell in
/// a desktop session, can pass `INVOCATION_ID` on to what it starts.
///
/// ```
/// use std::time::Duration;
/// use lameduck::{Builder, Platform};
///
/// # fn main() -> Result<(), lameduck::ConfigError> {
/// // Cloud Run: SIGKILL 10 s after SIGTERM, and no lame duck.
/// let config = Builder::from_lookup(|name| (name == "K_SERVICE").then(|| "orders".into()))?
///     .config()?;
/// assert_eq!(config.platform(), Platform::CloudRun);
/// assert_eq!(config.grace_period(), Duration::from_secs(10));
/// assert_eq!(config.shutdown_delay(), Duration::ZERO);
/// assert!(config.warnings().is_empty());
///
/// // An explicit LAMEDUCK_* variable wins over the platform's default.
/// let config = Builder::from_lookup(|name| match name {
///     "K_SERVICE" => Some("orders".into()),
///     "LAMEDUCK_GRACE_PERIOD" => Some("8s".into()),
///     _ => None,
/// })?
/// .config()?;
/// assert_eq!(config.grace_period(), Duration::from_secs(8));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Platform {
    /// A Kubernetes pod (`KUBERNETES_SERVICE_HOST`), Knative included.
    Kubernetes,
    /// Google Cloud Run (`K_SERVICE` without `KUBERNETES_SERVICE_HOST`).
    CloudRun,
    /// An Amazon ECS task, on EC2 or Fargate (`ECS_CONTAINER_METADATA_URI_V4`).
    Ecs,
    /// A HashiCorp Nomad allocation (`NOMAD_ALLOC_ID`).
    Nomad,
    /// A systemd service (`NOTIFY_SOCKET` or `INVOCATION_ID`).
    Systemd,
    /// None of the above: plain Docker, a terminal, another supervisor.
    Unknown,
}

/// The variables that identify each platform, in order of precedence.
const DETECTION: [(&str, Platform); 6] = [
    ("KUBERNETES_SERVICE_HOST", Platform::Kubernetes),
    ("K_SERVICE", Platform::CloudRun),
    ("ECS_CONTAINER_METADATA_URI_V4", Platform::Ecs),
    ("NOMAD_ALLOC_ID", Platform::Nomad),
    ("NOTIFY_SOCKET", Platform::Systemd),
    ("INVOCATION_ID", Platform::Systemd),
];

/// The defaults a platform's documented stop sequence calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub(crate) shutdown_delay: Duration,
    pub(crate) grace_period: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) hook_timeout: Duration,
}

impl Platform {
    /// The environment variables by which platforms announce themselves, in order of
    /// precedence. A test or a supervisor that wants the unknown platform's budget whatever
    /// the machine removes them from a child's environment.
    ///
    /// ```
    /// assert!(lameduck::Platform::VARIABLES.contains(&"KUBERNETES_SERVICE_HOST"));
    /// ```
    pub const VARIABLES: [&'static str; 6] = [
        DETECTION[0].0,
        DETECTION[1].0,
        DETECTION[2].0,
        DETECTION[3].0,
        DETECTION[4].0,
        DETECTION[5].0,
    ];

    /// Every platform, in order of precedence (`Unknown` last).
    #[cfg(test)]
    pub(crate) const ALL: [Platform; 6] = [
        Self::Kubernetes,
        Self::CloudRun,
        Self::Ecs,
        Self::Nomad,
        Self::Systemd,
        Self::Unknown,
    ];

    /// The name in logs: `kubernetes`, `cloud-run`, `ecs`, `nomad`, `systemd`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::CloudRun => "cloud-run",
            Self::Ecs => "ecs",
            Self::Nomad => "nomad",
            Self::Systemd => "systemd",
            Self::Unknown => "unknown",
        }
    }

    /// The first platform whose variable `lookup` finds (set, even if empty).
    pub(crate) fn detect(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        DETECTION
            .iter()
            .find(|(var, _)| lookup(var).is_some())
            .map_or(Self::Unknown, |(_, platform)| *platform)
    }

    /// The variable that identified this platform, as found through `lookup`.
    pub(crate) fn detected_by(
        self,
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Option<&'static str> {
        DETECTION
            .iter()
            .filter(|(_, platform)| *platform == self)
            .map(|(var, _)| *var)
            .find(|var| lookup(var).is_some())
    }

    /// The defaults for this platform.
    pub(crate) fn budget(self) -> Budget {
        const fn secs(s: u64) -> Duration {
            Duration::from_secs(s)
        }
        let (shutdown_delay, grace_period, drain_timeout, hook_timeout) = match self {
            // SIGTERM after preStop; SIGKILL terminationGracePeriodSeconds (30 s) after
            // termination began. Endpoints are removed asynchronously: hence the lame duck.
            Self::Kubernetes => (
                crate::config::DEFAULT_KUBERNETES_SHUTDOWN_DELAY,
                crate::config::DEFAULT_GRACE_PERIOD,
                crate::config::DEFAULT_DRAIN_TIMEOUT,
                crate::config::DEFAULT_HOOK_TIMEOUT,
            ),
            // SIGTERM, SIGKILL 10 s later. Cloud Run stops routing to an instance before it
            // is shut down (the signal goes mostly to instances scaled down for lack of
            // traffic), so a lame duck would only eat the 10 s.
            Self::CloudRun => (Duration::ZERO, secs(10), secs(7), secs(5)),
            // SIGTERM (the image's STOPSIGNAL), SIGKILL stopTimeout (30 s) later. The
            // service scheduler deregisters the task from its load balancer and waits for
            // the target to drain before it stops the task: no lame duck needed.
            Self::Ecs => (
                Duration::ZERO,
                secs(30),
                crate::config::DEFAULT_DRAIN_TIMEOUT,
                crate::config::DEFAULT_HOOK_TIMEOUT,
            ),
            // kill_signal (SIGINT, one of the default signals), SIGKILL kill_timeout (5 s)
            // later. Nomad deregisters the task's services first and waits the job's own
            // shutdown_delay, which is where a lame duck belongs.
            Self::Nomad => (Duration::ZERO, secs(5), secs(3), secs(2)),
            // KillSignal= (SIGTERM), SIGKILL TimeoutStopSec= (DefaultTimeoutStopSec=, 90 s)
            // later. systemd routes no traffic: a load balancer in front needs its own
            // LAMEDUCK_SHUTDOWN_DELAY.
            Self::Systemd => (
                Duration::ZERO,
                secs(90),
                crate::config::DEFAULT_DRAIN_TIMEOUT,
                crate::config::DEFAULT_HOOK_TIMEOUT,
            ),
            // Today's defaults outside Kubernetes. `docker stop` (10 s) cannot be told apart
            // from here: match it with LAMEDUCK_GRACE_PERIOD=10s LAMEDUCK_DRAIN_TIMEOUT=7s.
            Self::Unknown => (
                Duration::ZERO,
                crate::config::DEFAULT_GRACE_PERIOD,
                crate::config::DEFAULT_DRAIN_TIMEOUT,
                crate::config::DEFAULT_HOOK_TIMEOUT,
            ),
        };
        Budget {
            shutdown_delay,
            grace_period,
            drain_timeout,
            hook_timeout,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(vars: &[&str]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<String> = vars.iter().map(|v| v.to_string()).collect();
        move |name| vars.iter().any(|v| v == name).then(|| OsString::from("x"))
    }

    #[test]
    fn each_variable_detects_its_platform() {
        for (var, platform) in DETECTION {
            assert_eq!(Platform::detect(only(&[var])), platform, "{var}");
            assert_eq!(platform.detected_by(only(&[var])), Some(var));
        }
        assert_eq!(Platform::detect(only(&[])), Platform::Unknown);
        assert_eq!(
            Platform::detect(only(&["HOSTNAME", "PORT"])),
            Platform::Unknown
        );
    }

    #[test]
    fn an_empty_value_counts_as_set() {
        let empty = |name: &str| (name == "K_SERVICE").then(OsString::new);
        assert_eq!(Platform::detect(empty), Platform::CloudRun);
    }

    #[test]
    fn precedence_follows_the_documented_order() {
        let all: Vec<&str> = DETECTION.iter().map(|(var, _)| *var).collect();
        // Every suffix of the list: the first variable of it decides.
        for start in 0..all.len() {
            assert_eq!(
                Platform::detect(only(&all[start..])),
                DETECTION[start].1,
                "{:?}",
                &all[start..]
            );
        }
        // Knative on Kubernetes sets both.
        assert_eq!(
            Platform::detect(only(&["K_SERVICE", "KUBERNETES_SERVICE_HOST"])),
            Platform::Kubernetes
        );
        // A container platform beats an inherited INVOCATION_ID.
        assert_eq!(
            Platform::detect(only(&["INVOCATION_ID", "NOMAD_ALLOC_ID"])),
            Platform::Nomad
        );
        assert_eq!(
            Platform::detect(only(&["INVOCATION_ID", "ECS_CONTAINER_METADATA_URI_V4"])),
            Platform::Ecs
        );
    }

    #[test]
    fn names_are_distinct_and_displayed() {
        let names: Vec<&str> = Platform::ALL.iter().map(|p| p.as_str()).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name));
            assert_eq!(Platform::ALL[i].to_string(), *name);
        }
    }
}
