//! Failed-attempt bookkeeping shared by the password and code steps.

use super::state::LoginFlow;
use crate::directory::{AuditEvent, FailureRecord};
use crate::error::AppError;
use crate::state::AppState;

/// Tries before `charge_attempt` gives up on a record that other requests
/// keep changing.
const CHARGE_TRIES: usize = 20;

/// One attempt counted as failed before its credential was checked.
#[derive(Debug, Clone, Copy)]
pub struct Charge {
    before: FailureRecord,
    after: FailureRecord,
}

/// Counts the attempt as failed before its password or code is checked, and
/// returns the lock message instead when the account is locked. Parallel
/// requests each take one of the attempts left or find the lock, so a burst
/// cannot have more credentials checked than the lockout allows. A right
/// credential gives the attempt back with `refund`.
pub async fn charge_attempt(
    state: &AppState,
    flow: &LoginFlow,
) -> Result<Result<Charge, String>, AppError> {
    // Most sign-ins start with no failures on record, so the first try
    // assumes an empty record and writes without reading it first.
    let mut before = FailureRecord::default();
    for _ in 0..CHARGE_TRIES {
        let now = state.clock.now();
        if let Some(remaining) = state.lockout.remaining_lock(before, now) {
            return Ok(Err(locked_text(remaining)));
        }
        let after = state.lockout.after_failure(before, now);
        if state
            .failures
            .replace_failures(&flow.lockout_key, before, after, now)
            .await?
        {
            return Ok(Ok(Charge { before, after }));
        }
        before = state.failures.failures(&flow.lockout_key).await?;
    }
    Err(AppError::Internal(anyhow::anyhow!(
        "the failure count of one sign-in kept changing over {CHARGE_TRIES} tries"
    )))
}

/// Gives back an attempt whose credential was right, or that was never
/// checked. When other attempts were counted meanwhile, only this one is
/// taken off and their lock stays.
pub async fn refund(state: &AppState, flow: &LoginFlow, charge: Charge) -> Result<(), AppError> {
    let restored = state
        .failures
        .replace_failures(
            &flow.lockout_key,
            charge.after,
            charge.before,
            state.clock.now(),
        )
        .await?;
    if !restored {
        state.failures.forgive_failure(&flow.lockout_key).await?;
    }
    Ok(())
}

/// Records a failure that `charge_attempt` has already counted: the log, the
/// audit log and the metric. Returns the lock message when this failure
/// started a lock.
pub async fn charged_failure(
    state: &AppState,
    flow: &LoginFlow,
    charge: Charge,
    kind: &'static str,
    reason: &str,
    client_ip: Option<String>,
) -> Result<Option<String>, AppError> {
    report_failure(
        state,
        flow,
        Some(charge.after.failures),
        kind,
        reason,
        client_ip,
    )
    .await;
    Ok(state
        .lockout
        .remaining_lock(charge.after, state.clock.now())
        .map(locked_text))
}

fn locked_text(seconds: i64) -> String {
    let wait = if seconds > 90 {
        format!("{} minutes", (seconds + 59) / 60)
    } else {
        format!("{seconds} seconds")
    };
    format!("Too many failed attempts. This account is locked for {wait}. Wait, then try again.")
}

/// Records an attempt that met the lock: the log, the audit log and the
/// metric. It does not count as a failure, because its credential was never
/// checked: counting it would lengthen the lock past the time that the
/// message shows, so a user who waited that long and typed the right
/// password would be locked again.
pub async fn record_locked(
    state: &AppState,
    flow: &LoginFlow,
    kind: &'static str,
    client_ip: Option<String>,
) {
    report_failure(state, flow, None, kind, "locked", client_ip).await;
}

async fn report_failure(
    state: &AppState,
    flow: &LoginFlow,
    failures: Option<u32>,
    kind: &'static str,
    reason: &str,
    client_ip: Option<String>,
) {
    metrics::counter!("unified_login_sign_ins_total", "outcome" => "failure").increment(1);
    tracing::info!(
        user.id = flow.user_id.as_deref().unwrap_or("-"),
        failures,
        reason,
        "sign-in attempt failed"
    );
    state
        .record(AuditEvent {
            kind,
            outcome: "failure",
            user_id: flow.user_id.clone(),
            identifier: Some(flow.identifier.clone()),
            client_ip,
            detail: Some(reason.to_owned()),
        })
        .await;
}
