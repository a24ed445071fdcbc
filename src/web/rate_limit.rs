//! Per-client-IP rate limiting of sign-in form submissions.
//!
//! Both kinds of state implement the generic cell rate algorithm with the
//! same arithmetic: each address has a theoretical arrival time (TAT) of
//! its next request, and a request is let through while the TAT stays
//! within the burst. Instances that share PostgreSQL keep the TATs in the
//! database, so that they enforce one allowance per address between them,
//! and each check is one conditional upsert. A single instance on SQLite
//! keeps them in memory, which spares every form submission a write to the
//! database file.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::RateLimitConfig;
use crate::db::{DbPool, Engine};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::client_address::ClientAddress;

/// The maximum number of addresses in the in-memory table, which is then
/// about 33 MiB by the layout of its entries. Requests from further addresses are let
/// through until the next pruning, as with the database gone, and the
/// lockout still guards each account.
const MAX_LOCAL_ADDRESSES: usize = 500_000;

#[derive(Clone)]
pub struct IpRateLimiter {
    tats: Tats,
    /// Milliseconds one request adds to the TAT (a minute over the rate).
    emission_ms: i64,
    /// How far ahead of now the TAT may run: the burst.
    tolerance_ms: i64,
}

#[derive(Clone)]
enum Tats {
    Shared(DbPool),
    Local(Arc<LocalTats>),
}

#[derive(Default)]
struct LocalTats {
    by_address: Mutex<HashMap<IpAddr, i64>>,
    /// Set once a full table has been logged, until the next pruning, so
    /// that a flood of new addresses logs one line and not one per request.
    full_logged: AtomicBool,
}

impl IpRateLimiter {
    /// Creates a limiter that keeps its state in `pool` on PostgreSQL and in
    /// memory on SQLite.
    pub fn new(config: &RateLimitConfig, pool: DbPool) -> Self {
        let tats = match pool.engine() {
            Engine::Postgres => Tats::Shared(pool),
            Engine::Sqlite => Tats::Local(Arc::default()),
        };
        Self::with_tats(config, tats)
    }

    fn with_tats(config: &RateLimitConfig, tats: Tats) -> Self {
        let emission_ms = (60_000 / i64::from(config.per_ip_per_minute.max(1))).max(1);
        Self {
            tats,
            emission_ms,
            tolerance_ms: emission_ms * i64::from(config.burst.max(1)),
        }
    }

    /// Takes one request from `ip`'s allowance, or returns how long to wait.
    /// A database error lets the request through: the sign-in it guards
    /// needs the same database and fails on its own.
    pub async fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        match self.try_check(ip, now_ms()).await {
            Ok(verdict) => verdict,
            Err(error) => {
                tracing::warn!(%error, client.ip = %ip, "rate-limit check failed; request let through");
                Ok(())
            }
        }
    }

    async fn try_check(&self, ip: IpAddr, now: i64) -> Result<Result<(), Duration>, sqlx::Error> {
        match &self.tats {
            Tats::Shared(pool) => self.check_shared(pool, &format!("ip:{ip}"), now).await,
            Tats::Local(tats) => Ok(self.check_local(tats, ip, now)),
        }
    }

    fn check_local(&self, local: &LocalTats, ip: IpAddr, now: i64) -> Result<(), Duration> {
        let mut tats = local
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tat = tats.get(&ip).copied();
        let next = tat.map_or(now, |tat| tat.max(now)) + self.emission_ms;
        if next - now > self.tolerance_ms {
            // Only a stored TAT ahead of now can reject, so the fallback never applies.
            return Err(self.wait(tat.unwrap_or(now), now));
        }
        // Pruning here would scan the whole table for every new address
        // of a flood, so a full table waits for `forget_idle`.
        if tat.is_none() && tats.len() >= MAX_LOCAL_ADDRESSES {
            if !local.full_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    addresses = tats.len(),
                    "rate-limit table is full; new addresses are let through until idle ones are pruned"
                );
            }
            return Ok(());
        }
        tats.insert(ip, next);
        Ok(())
    }

    async fn check_shared(
        &self,
        pool: &DbPool,
        bucket: &str,
        now: i64,
    ) -> Result<Result<(), Duration>, sqlx::Error> {
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
        .fetch_optional(pool)
        .await?;
        if accepted.is_some() {
            return Ok(Ok(()));
        }
        let tat: Option<i64> =
            sqlx::query_scalar("SELECT tat_ms FROM rate_limits WHERE bucket = $1")
                .bind(bucket)
                .fetch_optional(pool)
                .await?;
        Ok(Err(self.wait(tat.unwrap_or(now), now)))
    }

    /// Returns how long a rejected request waits until the TAT `tat` lets
    /// the next one through.
    fn wait(&self, tat: i64, now: i64) -> Duration {
        let wait_ms = tat + self.emission_ms - self.tolerance_ms - now;
        Duration::from_millis(wait_ms.max(1) as u64)
    }

    /// Drops the state of addresses that are back to a full allowance.
    pub async fn forget_idle(&self) {
        let now = now_ms();
        match &self.tats {
            Tats::Local(local) => {
                local
                    .by_address
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|_, tat| *tat >= now);
                local.full_logged.store(false, Ordering::Relaxed);
            }
            Tats::Shared(pool) => {
                if let Err(error) = sqlx::query("DELETE FROM rate_limits WHERE tat_ms < $1")
                    .bind(now)
                    .execute(pool)
                    .await
                {
                    tracing::warn!(%error, "pruning rate-limit state failed");
                }
            }
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
        tracing::warn!(client.ip = %ip, wait_ms = wait.as_millis(), "sign-in rate limit reached");
        return AppError::RateLimited { retry_after: wait }.into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds one limiter of each kind with the same settings: the database
    /// one on SQLite, whose SQL is the one PostgreSQL runs, and the
    /// in-memory one.
    async fn limiters(per_minute: u32, burst: u32) -> [IpRateLimiter; 2] {
        let config = RateLimitConfig {
            per_ip_per_minute: per_minute,
            burst,
        };
        let pool = crate::db::connect_default("sqlite::memory:").await.unwrap();
        [
            IpRateLimiter::with_tats(&config, Tats::Shared(pool)),
            IpRateLimiter::with_tats(&config, Tats::Local(Arc::default())),
        ]
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn burst_then_limited_per_address() {
        for limiter in limiters(1, 2).await {
            let now = 1_000_000;
            let first = ip("192.0.2.1");
            assert_eq!(limiter.try_check(first, now).await.unwrap(), Ok(()));
            assert_eq!(limiter.try_check(first, now).await.unwrap(), Ok(()));
            let wait = limiter.try_check(first, now).await.unwrap().unwrap_err();
            assert_eq!(wait, Duration::from_secs(60));
            let second = ip("192.0.2.2");
            assert_eq!(limiter.try_check(second, now).await.unwrap(), Ok(()));
        }
    }

    #[tokio::test]
    async fn allowance_refills_at_the_configured_rate() {
        for limiter in limiters(60, 1).await {
            let now = 5_000_000;
            let client = ip("192.0.2.9");
            assert_eq!(limiter.try_check(client, now).await.unwrap(), Ok(()));
            let wait = limiter
                .try_check(client, now + 400)
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(wait, Duration::from_millis(600));
            assert_eq!(
                limiter.try_check(client, now + 1_000).await.unwrap(),
                Ok(())
            );
        }
    }

    #[tokio::test]
    async fn rejected_requests_keep_the_wait() {
        for limiter in limiters(60, 1).await {
            let now = 9_000_000;
            let client = ip("192.0.2.7");
            limiter.try_check(client, now).await.unwrap().unwrap();
            for _ in 0..5 {
                limiter.try_check(client, now).await.unwrap().unwrap_err();
            }
            assert_eq!(
                limiter.try_check(client, now + 1_000).await.unwrap(),
                Ok(())
            );
        }
    }

    #[tokio::test]
    async fn sqlite_state_stays_in_memory() {
        let pool = crate::db::connect_default("sqlite::memory:").await.unwrap();
        let config = RateLimitConfig {
            per_ip_per_minute: 1,
            burst: 1,
        };
        let limiter = IpRateLimiter::new(&config, pool.clone());
        limiter.check(ip("192.0.2.3")).await.unwrap();
        assert!(limiter.check(ip("192.0.2.3")).await.is_err());

        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_limits")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[tokio::test]
    async fn idle_addresses_are_forgotten() {
        let local = Arc::new(LocalTats::default());
        let config = RateLimitConfig {
            per_ip_per_minute: 60,
            burst: 1,
        };
        let limiter = IpRateLimiter::with_tats(&config, Tats::Local(local.clone()));
        let now = now_ms();
        limiter
            .check_local(&local, ip("192.0.2.5"), now - 5_000)
            .unwrap();
        limiter
            .check_local(&local, ip("192.0.2.6"), now + 60_000)
            .unwrap();

        limiter.forget_idle().await;
        let left: Vec<IpAddr> = local.by_address.lock().unwrap().keys().copied().collect();
        assert_eq!(left, vec![ip("192.0.2.6")]);
    }

    #[tokio::test]
    async fn full_table_lets_newcomers_through() {
        let config = RateLimitConfig {
            per_ip_per_minute: 60,
            burst: 1,
        };
        // Every entry went idle a minute ago but has not been pruned yet.
        let now = now_ms();
        let idle: HashMap<IpAddr, i64> = (0..MAX_LOCAL_ADDRESSES as u32)
            .map(|n| (IpAddr::from(n.to_be_bytes()), now - 60_000))
            .collect();
        let local = Arc::new(LocalTats {
            by_address: Mutex::new(idle),
            full_logged: AtomicBool::new(false),
        });
        let limiter = IpRateLimiter::with_tats(&config, Tats::Local(local.clone()));
        let newcomer = ip("2001:db8::1");

        for _ in 0..3 {
            assert_eq!(limiter.try_check(newcomer, now).await.unwrap(), Ok(()));
        }
        assert!(!local.by_address.lock().unwrap().contains_key(&newcomer));
        assert!(local.full_logged.load(Ordering::Relaxed));

        limiter.forget_idle().await;
        assert!(!local.full_logged.load(Ordering::Relaxed));
        assert_eq!(limiter.try_check(newcomer, now).await.unwrap(), Ok(()));
        let tracked = local.by_address.lock().unwrap();
        assert_eq!(tracked.len(), 1);
        assert!(tracked.contains_key(&newcomer));
    }
}
