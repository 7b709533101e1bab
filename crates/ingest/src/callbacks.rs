//! Callbacks that settle pending operation calls: a provider reporting how something an
//! operation started ended (M-Pesa's STK callback). The callback is matched to its call by
//! the reference the call's answer gave, and settled: the outcome goes on through the
//! integration's routes (durably, before the answer) and the call is marked.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::Value;
use switchyard_providers::operations::text;
use tracing::{Span, info};

use crate::sources::Source;
use crate::webhooks::{Accepted, Skipped, reject};
use crate::{ApiError, SharedState};

/// The answer to a callback of one of the source's settling operations, or `None` when
/// the body is not one (it goes on as an ordinary webhook).
pub(crate) async fn settle(
    state: &SharedState,
    source: &Source,
    raw: &[u8],
) -> Result<Option<(&'static str, Response)>, ApiError> {
    let retry = state.cfg.retry_after_secs;
    let Ok(body) = serde_json::from_slice::<Value>(raw) else {
        return Ok(None);
    };
    let Some((operation, spec, reference)) = source.settles.iter().find_map(|(name, spec)| {
        body.pointer(&spec.callback.reference_pointer)
            .and_then(text)
            .map(|r| (name, spec, r))
    }) else {
        return Ok(None);
    };
    Span::current().record("event_id", reference.as_str());
    let outcome = spec.callback.result.read(&body).ok_or_else(|| {
        reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            format!(
                "the callback for {reference} carries no final result at `{}`",
                spec.callback.result.code_pointer
            ),
        )
    })?;
    let call = state
        .store
        .call_by_reference(source.id, &reference)
        .await
        .map_err(|e| ApiError::from_store(e, retry))?
        .filter(|c| &c.operation == operation)
        .ok_or_else(|| {
            reject(
                StatusCode::NOT_FOUND,
                "unknown_reference",
                format!("no `{operation}` call of this integration has the reference {reference}"),
            )
        })?;
    let settled = switchyard_ops::calls::settle(
        &state.store,
        &state.broker,
        source.id,
        &call,
        spec,
        &outcome,
        &body,
        "callback",
    )
    .await
    .map_err(|e| match e {
        switchyard_ops::deliver::DeliverError::Store(s) => ApiError::from_store(s, retry),
        switchyard_ops::deliver::DeliverError::Broker(b) => {
            tracing::warn!(error = %b, "could not deliver a settled call's event; asking the provider to retry");
            ApiError::unavailable(
                "broker_unavailable",
                format!("the callback was not accepted: {b}; retry later"),
                retry,
            )
        }
    })?;
    let note = if settled.settled {
        info!(call = %call.id, %reference, succeeded = outcome.succeeded, "callback settled a pending call");
        format!(
            "settled {operation} call {} as {}",
            call.id,
            if outcome.succeeded {
                "succeeded"
            } else {
                "failed"
            }
        )
    } else {
        info!(call = %call.id, %reference, status = %call.status, "callback for a call already settled");
        format!(
            "{operation} call {} was already settled ({}); nothing new was done",
            call.id, call.status
        )
    };
    Ok(Some((
        if settled.settled {
            "settled"
        } else {
            "duplicate"
        },
        (
            StatusCode::ACCEPTED,
            Json(Accepted {
                jobs: settled.delivered.jobs,
                duplicate: Some(!settled.settled),
                skipped: settled
                    .delivered
                    .skipped
                    .into_iter()
                    .map(|(target, reason)| Skipped { target, reason })
                    .collect(),
                note: Some(note),
            }),
        )
            .into_response(),
    )))
}
