//! Waiting for a condition with a deadline instead of sleeping and hoping.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// What a polled closure returns: `bool` (ready or not) or `Option<T>` (ready with a value).
pub trait Ready {
    type Output;
    fn ready(self) -> Option<Self::Output>;
}

impl Ready for bool {
    type Output = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Output = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Stretches the deadlines given to [`scaled`] by this factor (a number, at least 1): the
/// VM of `tests/vm/run` emulates its CPUs and runs the same tests several times slower.
pub const TIME_SCALE_ENV: &str = "IIPTRAN_TEST_TIME_SCALE";

/// `d` stretched by [`TIME_SCALE_ENV`].
pub fn scaled(d: Duration) -> Duration {
    let factor = std::env::var(TIME_SCALE_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 1.0)
        .unwrap_or(1.0);
    d.mul_f64(factor)
}

/// Polls `check` every `interval` until it is ready or `timeout` has passed. An error from
/// `check` ends the wait at once: it means the condition can no longer come true.
/// The timeout error names `what` and how long and how often it was tried.
pub fn wait_until<R: Ready>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<R>,
) -> Result<R::Output> {
    let start = Instant::now();
    let mut tries = 0u32;
    loop {
        tries += 1;
        if let Some(value) = check()?.ready() {
            return Ok(value);
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} ({tries} checks) waiting for {what}");
        }
        std::thread::sleep(interval);
    }
}
