//! Failed-attempt bookkeeping shared by the password and code steps.

use super::state::LoginFlow;
use crate::directory::AuditEvent;
use crate::error::AppError;
use crate::state::AppState;

/// Returns the user-facing message when the flow's account is locked.
pub async fn lock_message(state: &AppState, flow: &LoginFlow) -> Result<Option<String>, AppError> {
    let record = state.failures.failures(&flow.lockout_key).await?;
    let remaining = state.lockout.remaining_lock(record, state.clock.now());
    Ok(remaining.map(locked_text))
}

fn locked_text(seconds: i64) -> String {
    let wait = if seconds > 90 {
        format!("{} minutes", (seconds + 59) / 60)
    } else {
        format!("{seconds} seconds")
    };
    format!("Too many failed attempts. This account is locked for {wait}. Wait, then try again.")
}

/// Counts one failed attempt, records it in the audit log, and returns the
/// lock message when this failure started a lock.
pub async fn record_failure(
    state: &AppState,
    flow: &LoginFlow,
    kind: &'static str,
    reason: &str,
    client_ip: Option<String>,
) -> Result<Option<String>, AppError> {
    let now = state.clock.now();
    let before = state.failures.failures(&flow.lockout_key).await?;
    let after = state.lockout.after_failure(before, now);
    state
        .failures
        .save_failures(&flow.lockout_key, after, now)
        .await?;

    metrics::counter!("unified_login_sign_ins_total", "outcome" => "failure").increment(1);
    tracing::info!(
        user.id = flow.user_id.as_deref().unwrap_or("-"),
        failures = after.failures,
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
    Ok(state.lockout.remaining_lock(after, now).map(locked_text))
}
