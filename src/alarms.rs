//! Alarms: conditions an operator must act on, raised while they last and
//! cleared when they end.
//!
//! | alarm | raised while |
//! |---|---|
//! | `AUTHSERVICE_DOWN` | the broker's own database does not respond, so no one can sign in |
//! | `CL_CONNECT_FAILURE` | the CL Auth identity provider (OpenID discovery, or the SAML metadata URL) cannot be reached |
//! | `REST_CONNECT_FAILURE` | a backing service the broker calls, the SMTP server, cannot be reached |
//!
//! Each transition is logged once, at error level when raised and info level
//! when cleared, and exported as the gauge `unified_login_alarm_active`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Alarm {
    #[serde(rename = "AUTHSERVICE_DOWN")]
    AuthServiceDown,
    #[serde(rename = "CL_CONNECT_FAILURE")]
    ClConnectFailure,
    #[serde(rename = "REST_CONNECT_FAILURE")]
    RestConnectFailure,
}

impl Alarm {
    pub const ALL: [Alarm; 3] = [
        Self::AuthServiceDown,
        Self::ClConnectFailure,
        Self::RestConnectFailure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::AuthServiceDown => "AUTHSERVICE_DOWN",
            Self::ClConnectFailure => "CL_CONNECT_FAILURE",
            Self::RestConnectFailure => "REST_CONNECT_FAILURE",
        }
    }
}

/// An alarm that is raised now.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveAlarm {
    pub alarm: Alarm,
    /// Unix time in seconds when it was raised.
    pub raised_at: i64,
    pub detail: String,
}

/// The alarms raised in this process.
#[derive(Default)]
pub struct AlarmBoard {
    active: Mutex<BTreeMap<Alarm, ActiveAlarm>>,
}

impl AlarmBoard {
    /// Raises or clears `alarm`, logging only a change of state.
    pub fn set(&self, alarm: Alarm, raised: bool, detail: &str, now: i64) {
        let mut active = self
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let was_raised = active.contains_key(&alarm);
        if raised && !was_raised {
            active.insert(
                alarm,
                ActiveAlarm {
                    alarm,
                    raised_at: now,
                    detail: detail.to_owned(),
                },
            );
            tracing::error!(alarm = alarm.name(), detail, "alarm raised");
        } else if !raised && was_raised {
            active.remove(&alarm);
            tracing::info!(alarm = alarm.name(), detail, "alarm cleared");
        }
        metrics::gauge!("unified_login_alarm_active", "alarm" => alarm.name()).set(if raised {
            1.0
        } else {
            0.0
        });
    }

    pub fn is_raised(&self, alarm: Alarm) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(&alarm)
    }

    pub fn active(&self) -> Vec<ActiveAlarm> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Runs the health checks on a schedule, for ever.
pub async fn watch(state: AppState, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        check(&state).await;
    }
}

/// Runs every health check once and raises or clears the alarms.
pub async fn check(state: &AppState) {
    let now = state.clock.now();
    let database = tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    let database_ok = matches!(database, Ok(Ok(_)));
    state.alarms.set(
        Alarm::AuthServiceDown,
        !database_ok,
        "the database does not respond",
        now,
    );

    if let Some(oidc) = &state.oidc {
        // The connector raises and clears CL_CONNECT_FAILURE itself, on
        // every request to the IdP, this probe included.
        oidc.probe().await;
    } else {
        match state.saml.probe_metadata().await {
            None => {}
            Some(Ok(())) => state.alarms.set(
                Alarm::ClConnectFailure,
                false,
                "the SAML metadata URL responds",
                now,
            ),
            Some(Err(error)) => {
                let detail = format!("{error:#}");
                state
                    .alarms
                    .set(Alarm::ClConnectFailure, true, &detail, now);
            }
        }
    }

    if let Some(result) = state.mailer.test_connection().await {
        let detail = match &result {
            Ok(()) => "the SMTP server responds".to_owned(),
            Err(error) => format!("the SMTP server cannot be reached: {error:#}"),
        };
        state
            .alarms
            .set(Alarm::RestConnectFailure, result.is_err(), &detail, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_tracked_once() {
        let board = AlarmBoard::default();
        assert!(!board.is_raised(Alarm::ClConnectFailure));
        board.set(Alarm::ClConnectFailure, true, "down", 10);
        board.set(Alarm::ClConnectFailure, true, "still down", 20);
        let active = board.active();
        assert_eq!(active.len(), 1);
        assert_eq!(
            active[0].raised_at, 10,
            "a repeated raise keeps the first time"
        );
        board.set(Alarm::ClConnectFailure, false, "up", 30);
        assert!(board.active().is_empty());
    }
}
