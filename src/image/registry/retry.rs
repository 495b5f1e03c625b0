//! Trying a registry request again: which failures are worth another try (a connection refused, reset
//! or closed early, a stalled response, HTTP 408, 429, 500, 502, 503 and 504), how long to wait first (a
//! doubling backoff, or longer when the registry asks with `Retry-After`), and the bounds: tries in a
//! row that bring no new byte (`image.retry_attempts`) and their total wait
//! (`image.retry_max_wait_seconds`). Bytes received start the count again, so a long blob that is cut
//! now and then still finishes.

use std::time::{Duration, SystemTime};

use crate::Error;

/// The bounds on trying again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Tries of one request in a row that bring no new byte (1: never again).
    pub attempts: u32,
    /// The longest total wait between those tries, waits a registry asked for included.
    pub max_wait: Duration,
}

impl Default for Retry {
    /// 5 tries, containerd's bound on one request (`maxAttempts` in its remotes/docker), within 60 s.
    fn default() -> Self {
        Retry {
            attempts: 5,
            max_wait: Duration::from_secs(60),
        }
    }
}

impl Retry {
    /// One try only (a mirror with endpoints after it: those are tried instead, as containerd does).
    pub fn once() -> Self {
        Retry {
            attempts: 1,
            max_wait: Duration::ZERO,
        }
    }
}

/// The wait before the second try; it doubles with each failure after it, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// A failed try.
#[derive(Debug)]
pub struct Failure {
    pub err: Error,
    /// Another try may succeed.
    pub again: bool,
    /// The wait the registry asked for (`Retry-After`).
    pub after: Option<Duration>,
    /// What went wrong, for the retry metric's `reason` label (`connect`, `reset`, `timeout`,
    /// `stall`, `short_body`, `http_503`, ...).
    pub reason: String,
}

impl Failure {
    /// A failure another try may mend, for `reason` (see [`Failure::reason`]).
    pub fn transient(err: Error, reason: impl Into<String>) -> Self {
        Failure {
            err,
            again: true,
            after: None,
            reason: reason.into(),
        }
    }
}

impl From<Error> for Failure {
    /// A failure for good.
    fn from(err: Error) -> Self {
        Failure {
            err,
            again: false,
            after: None,
            reason: String::new(),
        }
    }
}

/// The tries of one request (a manifest, a blob from its first byte to its last).
pub struct Tries {
    policy: Retry,
    failed: u32,
    waited: Duration,
}

impl Tries {
    pub fn new(policy: Retry) -> Self {
        Tries {
            policy,
            failed: 0,
            waited: Duration::ZERO,
        }
    }

    /// New bytes arrived: the count of failed tries (and their wait) starts again.
    pub fn progress(&mut self) {
        self.failed = 0;
        self.waited = Duration::ZERO;
    }

    /// After failure `f` of a try at `what`: waits and returns `Ok` to try again, else the error to give
    /// up with (`f`'s own, or its refusal of a `Retry-After` past the bound).
    pub async fn again(&mut self, f: Failure, what: &str) -> Result<(), Error> {
        match self.plan(f.again, f.after) {
            Ok(wait) => {
                crate::metrics::global().pull_retry(&f.reason);
                tracing::info!(what, error = %f.err, failed = self.failed,
                    wait_ms = wait.as_millis() as u64, "registry request failed, trying again");
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Err(None) => Err(f.err),
            Err(Some(why)) => Err(f.err.context(why)),
        }
    }

    /// The wait before trying again after a failure (`again`: worth another try; `after`: the wait the
    /// registry asked for), counted as waited; else give up, with what to say (`None`: nothing).
    fn plan(&mut self, again: bool, after: Option<Duration>) -> Result<Duration, Option<String>> {
        if !again {
            return Err(None);
        }
        self.failed += 1;
        if self.failed >= self.policy.attempts {
            return Err((self.failed > 1).then(|| format!("after {} tries", self.failed)));
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (self.failed - 1).min(16))
            .min(MAX_BACKOFF);
        let left = self.policy.max_wait.saturating_sub(self.waited);
        let wait = match after {
            Some(a) if a > left => {
                return Err(Some(format!(
                    "the registry asked to try again after {} s, more than the {} s left to wait \
                     (image.retry_max_wait_seconds)",
                    a.as_secs_f64().ceil(),
                    left.as_secs()
                )));
            }
            Some(a) => a.max(backoff).min(left),
            None if left.is_zero() => {
                return Err(Some(format!(
                    "after {} tries within image.retry_max_wait_seconds",
                    self.failed
                )));
            }
            None => backoff.min(left),
        };
        self.waited += wait;
        Ok(wait)
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (a date past gives no wait).
pub fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn tries_are_bounded_and_progress_starts_the_count_again() {
        let mut t = Tries::new(Retry {
            attempts: 3,
            max_wait: Duration::from_secs(60),
        });
        assert_eq!(t.plan(true, None), Ok(Duration::from_millis(250)));
        assert_eq!(t.plan(true, None), Ok(Duration::from_millis(500)));
        t.progress();
        assert_eq!(t.plan(true, None), Ok(Duration::from_millis(250)));
        assert_eq!(t.plan(true, None), Ok(Duration::from_millis(500)));
        assert_eq!(t.plan(true, None), Err(Some("after 3 tries".into())));
        let mut t = Tries::new(Retry::default());
        assert_eq!(t.plan(false, None), Err(None));
        let mut t = Tries::new(Retry::once());
        assert_eq!(t.plan(true, None), Err(None));
    }

    #[test]
    fn a_retry_after_is_honoured_within_the_bound() {
        let mut t = Tries::new(Retry {
            attempts: 5,
            max_wait: Duration::from_secs(10),
        });
        let s = Duration::from_secs;
        assert_eq!(t.plan(true, Some(s(4))), Ok(s(4)));
        let e = t.plan(true, Some(s(7))).unwrap_err().unwrap();
        assert!(e.contains("after 7 s, more than the 6 s left"), "{e}");
        assert_eq!(t.plan(true, None), Ok(Duration::from_secs(1)));
    }
}
