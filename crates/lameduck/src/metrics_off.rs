//! The metrics recording points when the `metrics` feature is off: nothing, inlined away.

use std::time::Duration;

use crate::hooks::HookOutcome;

#[inline(always)]
pub(crate) fn shutdown_began(_reason: &crate::Reason) {}

#[inline(always)]
pub(crate) fn shutdown_ended(_took: Duration, _stopping: Duration) {}

#[inline(always)]
pub(crate) fn hook_ran(_name: &str, _phase: &'static str, _outcome: HookOutcome, _took: Duration) {}

#[inline(always)]
pub(crate) fn cut(_requests: usize, _connections: usize, _tasks: usize) {}

#[inline(always)]
pub(crate) fn check_ran(_name: &str, _kind: &'static str, _passed: bool, _took: Duration) {}
