//! Per-endpoint rate limiters (governor's GCRA) and in-flight bounds.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{EndpointLimit, LimitsConfig};
use crate::mapping::Endpoint;

/// The limiter, optional daily limiter and in-flight semaphore of one endpoint.
#[derive(Debug)]
pub struct EndpointLimiter {
    rate: DefaultDirectRateLimiter,
    daily: Option<DefaultDirectRateLimiter>,
    in_flight: Arc<Semaphore>,
}

fn quota(per_period: f64, period: Duration, burst: u32) -> Quota {
    // One cell every period/per_period; `with_period` only fails for a zero period, which
    // validated config (per_second > 0) cannot produce. Fall back to one per second.
    let interval = period.div_f64(per_period.max(f64::MIN_POSITIVE));
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl EndpointLimiter {
    /// Builds the limiters of one endpoint.
    pub fn new(limit: &EndpointLimit) -> Self {
        let rate = RateLimiter::direct(quota(
            limit.per_second,
            Duration::from_secs(1),
            limit.effective_burst(),
        ));
        // A daily cap as a second bucket: the whole day's allowance as burst, refilled evenly.
        let daily = limit
            .per_day
            .map(|d| RateLimiter::direct(quota(f64::from(d), Duration::from_secs(86_400), d)));
        Self {
            rate,
            daily,
            in_flight: Arc::new(Semaphore::new(limit.concurrency)),
        }
    }

    /// Waits for an in-flight slot. Holding the permit across the limiter wait and the
    /// request bounds the work queued per endpoint.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().acquire_owned().await.ok()
    }

    /// Waits until the rate (and daily) limit admits one request; returns the time waited.
    pub async fn admit(&self) -> Duration {
        let start = Instant::now();
        if let Some(daily) = &self.daily {
            daily.until_ready().await;
        }
        self.rate.until_ready().await;
        start.elapsed()
    }
}

/// All endpoints' limiters.
#[derive(Debug)]
pub struct Limiters {
    by_endpoint: Vec<EndpointLimiter>,
}

impl Limiters {
    /// Builds one limiter per endpoint. Both delete endpoints are separate buckets at
    /// Iterable, but share one configured limit; each gets its own limiter here.
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            by_endpoint: Endpoint::ALL
                .iter()
                .map(|e| EndpointLimiter::new(config.get(*e)))
                .collect(),
        }
    }

    /// The limiter of `endpoint`.
    pub fn get(&self, endpoint: Endpoint) -> &EndpointLimiter {
        // ALL and index() agree (tested), so the index is always in range.
        &self.by_endpoint[endpoint.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_all() {
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }

    #[tokio::test]
    async fn the_limiter_holds_the_rate() {
        let l = EndpointLimiter::new(&EndpointLimit {
            per_second: 50.0,
            burst: Some(1),
            per_day: None,
            concurrency: 4,
        });
        let start = Instant::now();
        for _ in 0..26 {
            l.admit().await;
        }
        // 25 intervals of 20 ms after the first request: the limiter may never be faster than
        // its rate. (How close to the rate it gets is a benchmark question, not a test's:
        // publisher-bench measures it; an upper bound here would fail on a loaded machine.)
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(480), "{took:?}");
    }
}
