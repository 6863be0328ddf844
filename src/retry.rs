//! Retries: the one backoff schedule and the one loop behind everything the
//! shell tries again: a router's weight change, a metric source's request,
//! a webhook delivery and a lifecycle hook.
//!
//! [`RetryPolicy`] is the schedule: at most `attempts` attempts, the pause
//! before attempt `n + 1` drawn with full jitter from an exponential that
//! starts at `initial` and is capped at `max`. [`RetryPolicy::run`] makes
//! the attempts. It takes its jitter source and its sleep as arguments and
//! reads no clock, so a test drives it with fixed draws and a sleep that
//! only records, and nothing waits for real.
//!
//! A run may continue a count begun before a restart (the outbox keeps each
//! row's attempts in the store): attempts already made count against the
//! budget, and a run always makes at least one.

use std::future::Future;
use std::time::Duration;

/// Backoff between attempts: exponential from `initial`, capped at `max`,
/// with full jitter, for at most `attempts` attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// The daemon's schedule for routers, webhook deliveries and hooks:
    /// five attempts, pauses of up to 0.2, 0.4, 0.8 and 1.6 s.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

/// One attempt of a run: its number (counting attempts made before a
/// restart) and whether the budget allows no other after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Try {
    pub number: u32,
    pub last: bool,
}

/// How a run ended: the last attempt's result and its number.
#[derive(Debug, PartialEq, Eq)]
pub struct Retried<T, E> {
    pub result: Result<T, E>,
    pub attempts: u32,
}

impl RetryPolicy {
    /// The pause before attempt `n + 1` (after `n >= 1` attempts), given a
    /// uniform draw `jitter` in [0, 1): full jitter over the capped
    /// exponential.
    pub fn delay(&self, n: u32, jitter: f64) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max);
        capped.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// The number of the last attempt of a run that starts after `made`
    /// attempts: the budget, but always one more than `made`.
    pub fn last_attempt(&self, made: u32) -> u32 {
        self.attempts.max(1).max(made.saturating_add(1))
    }

    /// Make attempts until one succeeds, `failed` says a failure is not
    /// worth another, or the budget is spent; pause [`Self::delay`] between
    /// two, with a draw from `jitter`, through `sleep`. `made` attempts were
    /// made before (0 for a fresh run). `failed` sees every failure, the
    /// last one included (its answer is then ignored).
    pub async fn run<T, E, A, Fut, S, Pause>(
        &self,
        made: u32,
        mut jitter: impl FnMut() -> f64,
        mut sleep: S,
        mut attempt: A,
        mut failed: impl FnMut(Try, &E) -> bool,
    ) -> Retried<T, E>
    where
        A: FnMut(Try) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        S: FnMut(Duration) -> Pause,
        Pause: Future<Output = ()>,
    {
        let last = self.last_attempt(made);
        let mut number = made.saturating_add(1);
        loop {
            let t = Try {
                number,
                last: number >= last,
            };
            match attempt(t).await {
                Ok(value) => {
                    return Retried {
                        result: Ok(value),
                        attempts: number,
                    };
                }
                Err(e) => {
                    let again = failed(t, &e);
                    if t.last || !again {
                        return Retried {
                            result: Err(e),
                            attempts: number,
                        };
                    }
                }
            }
            sleep(self.delay(number, jitter())).await;
            number += 1;
        }
    }
}

/// A uniform draw in [0, 1) from the OS's random source, to spread the
/// retries of many daemons apart (not for anything secret). Without a
/// random source every draw is 0.5, which is still a correct pause.
pub fn jitter() -> f64 {
    match getrandom::u64() {
        Ok(draw) => (draw >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        }
    }

    /// Drives `future` to its end on this thread; the loop's sleeps here
    /// are ready at once, so it never waits.
    fn block_on<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }

    /// A run against `outcomes` (one per attempt, in order) on a fake
    /// clock: returns how it ended, the attempts it made and the pauses.
    fn fake_run(
        made: u32,
        outcomes: &[Result<(), &'static str>],
        retry_if: impl Fn(&str) -> bool,
    ) -> (Retried<(), &'static str>, Vec<Try>, Vec<Duration>) {
        let tries = RefCell::new(Vec::new());
        let slept = RefCell::new(Vec::new());
        let mut draws = [0.5, 1.0, 0.25].into_iter().cycle();
        let run = block_on(policy().run(
            made,
            || draws.next().unwrap_or(0.0),
            |d| {
                slept.borrow_mut().push(d);
                std::future::ready(())
            },
            |t| {
                tries.borrow_mut().push(t);
                let i = tries.borrow().len() - 1;
                std::future::ready(outcomes[i])
            },
            |_, e| retry_if(e),
        ));
        (run, tries.into_inner(), slept.into_inner())
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let p = RetryPolicy {
            attempts: 6,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        assert_eq!(p.delay(1, 0.999_999), Duration::from_nanos(99_999_900));
        assert_eq!(p.delay(2, 0.5), Duration::from_millis(100));
        assert_eq!(p.delay(4, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay(5, 1.0), Duration::from_millis(1000));
        assert_eq!(p.delay(40, 1.0), Duration::from_millis(1000));
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
        // Out-of-range draws are clamped, never stretch the cap.
        assert_eq!(p.delay(1, 7.0), Duration::from_millis(100));
        assert_eq!(p.delay(1, -1.0), Duration::ZERO);
    }

    #[test]
    fn the_budget_counts_attempts_made_before_and_always_allows_one() {
        let p = policy();
        assert_eq!(p.last_attempt(0), 4);
        assert_eq!(p.last_attempt(3), 4);
        assert_eq!(p.last_attempt(4), 5);
        assert_eq!(p.last_attempt(9), 10);
        let none = RetryPolicy {
            attempts: 0,
            ..policy()
        };
        assert_eq!(none.last_attempt(0), 1, "at least one attempt");
    }

    #[test]
    fn failures_are_retried_with_the_scheduled_pauses_until_one_succeeds() {
        let (run, tries, slept) = fake_run(0, &[Err("a"), Err("b"), Ok(())], |_| true);
        assert_eq!(
            run,
            Retried {
                result: Ok(()),
                attempts: 3
            }
        );
        assert_eq!(
            tries,
            [
                Try {
                    number: 1,
                    last: false
                },
                Try {
                    number: 2,
                    last: false
                },
                Try {
                    number: 3,
                    last: false
                },
            ]
        );
        // Draws 0.5 then 1.0 over 100 and 200 ms.
        assert_eq!(
            slept,
            [Duration::from_millis(50), Duration::from_millis(200)]
        );
    }

    #[test]
    fn the_last_failure_ends_the_run_without_a_pause_after_it() {
        let (run, tries, slept) = fake_run(0, &[Err("x"); 4], |_| true);
        assert_eq!(
            run,
            Retried {
                result: Err("x"),
                attempts: 4
            }
        );
        assert_eq!(tries.len(), 4);
        assert!(tries[3].last && !tries[2].last);
        assert_eq!(
            slept,
            [
                Duration::from_millis(50),
                Duration::from_millis(200),
                Duration::from_millis(100)
            ]
        );
    }

    #[test]
    fn a_failure_not_worth_retrying_stops_at_once() {
        let (run, tries, slept) = fake_run(0, &[Err("fatal"), Ok(())], |e| e != "fatal");
        assert_eq!(run.result, Err("fatal"));
        assert_eq!((run.attempts, tries.len()), (1, 1));
        assert!(slept.is_empty());
    }

    #[test]
    fn a_run_after_a_restart_continues_the_count() {
        // Two attempts were made before: two are left of the four.
        let (run, tries, _) = fake_run(2, &[Err("x"); 4], |_| true);
        assert_eq!(run.attempts, 4);
        assert_eq!(tries.iter().map(|t| t.number).collect::<Vec<_>>(), [3, 4]);
        // The budget is spent: one attempt all the same, and it is the last.
        let (run, tries, slept) = fake_run(6, &[Err("x"); 4], |_| true);
        assert_eq!(run.attempts, 7);
        assert_eq!(
            tries,
            [Try {
                number: 7,
                last: true
            }]
        );
        assert!(slept.is_empty());
    }

    #[test]
    fn os_jitter_is_a_unit_draw() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
