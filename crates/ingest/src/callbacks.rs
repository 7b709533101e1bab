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
    body: &Value,
) -> Result<Option<(&'static str, Response)>, ApiError> {
    let retry = state.cfg.retry_after_secs;
    // The references the callback carries where the source's settling operations look.
    let mut references: Vec<String> = source
        .settles
        .iter()
        .filter_map(|(_, spec)| spec.callback.as_ref())
        .filter_map(|cb| body.pointer(&cb.reference_pointer).and_then(text))
        .collect();
    references.dedup();
    if references.is_empty() {
        return Ok(None);
    }
    let mut found = None;
    for reference in &references {
        if let Some(call) = state
            .store
            .call_by_reference(source.id, reference)
            .await
            .map_err(|e| ApiError::from_store(e, retry))?
        {
            found = Some((reference.clone(), call));
            break;
        }
    }
    let Some((reference, call)) = found else {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "unknown_reference",
            format!(
                "no operation call of this integration has the reference {}",
                references.join(" or ")
            ),
        ));
    };
    Span::current().record("event_id", reference.as_str());
    // The call's own operation says how to read its callback.
    let Some((operation, spec)) = source.settles.iter().find(|(name, spec)| {
        name == &call.operation
            && spec
                .callback
                .as_ref()
                .and_then(|cb| body.pointer(&cb.reference_pointer))
                .and_then(text)
                .as_ref()
                == Some(&reference)
    }) else {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            format!(
                "the callback names {reference}, a `{}` call, but does not carry it where `{}` callbacks do",
                call.operation, call.operation
            ),
        ));
    };
    // A callback that only says something changed: ask the provider at once (the leading
    // scheduler does, within a tick).
    let Some(cb) = &spec.callback else {
        return Ok(None);
    };
    let Some(result) = &cb.result else {
        let asked = state
            .store
            .call_due_now(call.id)
            .await
            .map_err(|e| ApiError::from_store(e, retry))?;
        info!(call = %call.id, %reference, asked, "callback: the provider is asked for the result");
        let note = if asked {
            format!(
                "{operation} call {} will be asked for its result now",
                call.id
            )
        } else {
            format!(
                "{operation} call {} was already settled ({}); nothing new was done",
                call.id, call.status
            )
        };
        return Ok(Some((
            if asked { "settling" } else { "duplicate" },
            reply(spec, body).unwrap_or_else(|| accepted(Vec::new(), Vec::new(), !asked, note)),
        )));
    };
    let outcome = result.read(body).ok_or_else(|| {
        reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            format!(
                "the callback for {reference} carries no final result at `{}`",
                result.code_pointer
            ),
        )
    })?;
    let settled = switchyard_ops::calls::settle(
        &state.store,
        &state.broker,
        source.id,
        &call,
        spec,
        &outcome,
        body,
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
    let answer = reply(spec, body).unwrap_or_else(|| {
        accepted(
            settled.delivered.jobs,
            settled.delivered.skipped,
            !settled.settled,
            note,
        )
    });
    Ok(Some((
        if settled.settled {
            "settled"
        } else {
            "duplicate"
        },
        answer,
    )))
}

/// Switchyard's own answer to a callback: `202` with the jobs it delivered.
fn accepted(
    jobs: Vec<uuid::Uuid>,
    skipped: Vec<(String, String)>,
    duplicate: bool,
    note: String,
) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            jobs,
            messages: Vec::new(),
            duplicate: Some(duplicate),
            skipped: skipped
                .into_iter()
                .map(|(target, reason)| Skipped { target, reason })
                .collect(),
            note: Some(note),
        }),
    )
        .into_response()
}

/// The reply the provider expects, as the connector declares it, made from the callback.
fn reply(spec: &switchyard_providers::operations::SettleSpec, body: &Value) -> Option<Response> {
    let r = spec.callback.as_ref()?.reply.as_ref()?;
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    Some((status, Json(r.body.apply(body))).into_response())
}
