//! Per-client-IP rate limiting of sign-in form submissions.
//!
//! NOTE: the counters live in this process; instances behind one load
//! balancer each keep their own until a shared store backs them.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::error::AppError;
use crate::state::AppState;

#[derive(Clone)]
pub struct IpRateLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl IpRateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        let per_minute = NonZeroU32::new(config.per_ip_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            limiter: Arc::new(RateLimiter::keyed(quota)),
        }
    }

    /// Takes one request from `ip`'s allowance, or returns how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops the state of addresses that are back to a full allowance.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

/// Middleware that limits POST requests per client IP address.
pub async fn limit_posts(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    if let Some(ip) = ip
        && let Err(wait) = state.rate_limiter.check(ip)
    {
        tracing::warn!(client.ip = %ip, wait_seconds = wait.as_secs(), "sign-in rate limit reached");
        return AppError::RateLimited { retry_after: wait }.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_per_address() {
        let limiter = IpRateLimiter::new(&RateLimitConfig {
            per_ip_per_minute: 1,
            burst: 2,
        });
        let first: IpAddr = "192.0.2.1".parse().unwrap();
        let second: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiter.check(first).is_ok());
        assert!(limiter.check(first).is_ok());
        let wait = limiter.check(first).unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(limiter.check(second).is_ok());
    }
}
