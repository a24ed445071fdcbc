//! Per-client-IP rate limiting of sign-in form submissions.
//!
//! The state lives in the shared database, so instances behind one load
//! balancer enforce one allowance per address between them. Each check is
//! one conditional upsert implementing the generic cell rate algorithm:
//! the row contains the theoretical arrival time (TAT) of the next request,
//! and a request is let through while the TAT stays within the burst.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::RateLimitConfig;
use crate::db::DbPool;
use crate::error::AppError;
use crate::state::AppState;
use crate::web::client_address::ClientAddress;

#[derive(Clone)]
pub struct IpRateLimiter {
    pool: DbPool,
    /// Milliseconds one request adds to the TAT (a minute over the rate).
    emission_ms: i64,
    /// How far ahead of now the TAT may run: the burst.
    tolerance_ms: i64,
}

impl IpRateLimiter {
    pub fn new(config: &RateLimitConfig, pool: DbPool) -> Self {
        let emission_ms = (60_000 / i64::from(config.per_ip_per_minute.max(1))).max(1);
        Self {
            pool,
            emission_ms,
            tolerance_ms: emission_ms * i64::from(config.burst.max(1)),
        }
    }

    /// Takes one request from `ip`'s allowance, or returns how long to wait.
    /// A database error lets the request through: the sign-in it guards
    /// needs the same database and fails on its own.
    pub async fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        match self.try_check(&format!("ip:{ip}"), now_ms()).await {
            Ok(verdict) => verdict,
            Err(error) => {
                tracing::warn!(%error, client.ip = %ip, "rate-limit check failed; request let through");
                Ok(())
            }
        }
    }

    async fn try_check(&self, bucket: &str, now: i64) -> Result<Result<(), Duration>, sqlx::Error> {
        let accepted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO rate_limits (bucket, tat_ms) VALUES ($1, $2 + $3) \
             ON CONFLICT (bucket) DO UPDATE \
             SET tat_ms = (CASE WHEN rate_limits.tat_ms > $2 THEN rate_limits.tat_ms ELSE $2 END) + $3 \
             WHERE (CASE WHEN rate_limits.tat_ms > $2 THEN rate_limits.tat_ms ELSE $2 END) + $3 - $2 <= $4 \
             RETURNING tat_ms",
        )
        .bind(bucket)
        .bind(now)
        .bind(self.emission_ms)
        .bind(self.tolerance_ms)
        .fetch_optional(&self.pool)
        .await?;
        if accepted.is_some() {
            return Ok(Ok(()));
        }
        let tat: Option<i64> =
            sqlx::query_scalar("SELECT tat_ms FROM rate_limits WHERE bucket = $1")
                .bind(bucket)
                .fetch_optional(&self.pool)
                .await?;
        let wait_ms = tat.map_or(0, |tat| tat + self.emission_ms - self.tolerance_ms - now);
        Ok(Err(Duration::from_millis(wait_ms.max(1) as u64)))
    }

    /// Drops the state of addresses that are back to a full allowance.
    pub async fn forget_idle(&self) {
        if let Err(error) = sqlx::query("DELETE FROM rate_limits WHERE tat_ms < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await
        {
            tracing::warn!(%error, "pruning rate-limit state failed");
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Middleware that limits POST requests per client IP address, as
/// `client_address::record` found it.
pub async fn limit_posts(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let ip = request
        .extensions()
        .get::<ClientAddress>()
        .map(|ClientAddress(ip)| *ip);
    if let Some(ip) = ip
        && let Err(wait) = state.rate_limiter.check(ip).await
    {
        tracing::warn!(client.ip = %ip, wait_seconds = wait.as_secs(), "sign-in rate limit reached");
        return AppError::RateLimited { retry_after: wait }.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn limiter(per_minute: u32, burst: u32) -> IpRateLimiter {
        let pool = crate::db::connect_default("sqlite::memory:").await.unwrap();
        IpRateLimiter::new(
            &RateLimitConfig {
                per_ip_per_minute: per_minute,
                burst,
            },
            pool,
        )
    }

    #[tokio::test]
    async fn burst_then_limited_per_address() {
        let limiter = limiter(1, 2).await;
        let now = 1_000_000;
        assert_eq!(
            limiter.try_check("ip:192.0.2.1", now).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            limiter.try_check("ip:192.0.2.1", now).await.unwrap(),
            Ok(())
        );
        let wait = limiter
            .try_check("ip:192.0.2.1", now)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        assert_eq!(
            limiter.try_check("ip:192.0.2.2", now).await.unwrap(),
            Ok(())
        );
    }

    #[tokio::test]
    async fn allowance_refills_at_the_configured_rate() {
        let limiter = limiter(60, 1).await;
        let now = 5_000_000;
        assert_eq!(
            limiter.try_check("ip:192.0.2.9", now).await.unwrap(),
            Ok(())
        );
        let wait = limiter
            .try_check("ip:192.0.2.9", now + 400)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(wait, Duration::from_millis(600));
        assert_eq!(
            limiter
                .try_check("ip:192.0.2.9", now + 1_000)
                .await
                .unwrap(),
            Ok(())
        );
    }

    #[tokio::test]
    async fn rejected_requests_keep_the_wait() {
        let limiter = limiter(60, 1).await;
        let now = 9_000_000;
        limiter
            .try_check("ip:192.0.2.7", now)
            .await
            .unwrap()
            .unwrap();
        for _ in 0..5 {
            limiter
                .try_check("ip:192.0.2.7", now)
                .await
                .unwrap()
                .unwrap_err();
        }
        assert_eq!(
            limiter
                .try_check("ip:192.0.2.7", now + 1_000)
                .await
                .unwrap(),
            Ok(())
        );
    }
}
