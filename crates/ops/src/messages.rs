//! Messages with fallback channels: a channel route sends an event as a message over an
//! ordered list of channels (WhatsApp, then SMS), each a connector's operation (`send`).
//! The next channel is tried when one fails for good, or reports no delivery within its
//! connector's deadline (its call `expired`); each channel's outcome is recorded on the
//! message. A channel's call carries the idempotency key `message:<id>:<channel>`, so a
//! message is sent at most once per channel, whatever is retried.
//!
//! The leading scheduler moves messages on (`advance`) every tick.
use chrono::{Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use switchyard_core::RouteFilter;
use switchyard_core::mapping::FieldMap;
use switchyard_store::{ChannelRoute, Message, Store, StoreError};
use tracing::{info, warn};
use uuid::Uuid;

use crate::calls::{Calls, RunError};

/// One channel of a route.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub integration_id: Uuid,
    /// The connector's operation that sends (`send`, `send_template`).
    pub operation: String,
    /// The operation's input, a field map over the event's data (`{"to": "/guardian/phone",
    /// "text": {"template": "Fees of {/amount} are due"}}`); empty: the data as it is.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: FieldMap,
}

/// The message a channel call's idempotency key names (`message:<id>:<channel>`).
pub fn message_of_key(key: &str) -> Option<Uuid> {
    key.strip_prefix("message:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

/// How long a channel's call may wait for the provider's answer.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The most channels a route may have.
pub const MAX_CHANNELS: usize = 10;

/// Why a channel route cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RouteError {
    RouteError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Add a channel route from `source` (the channels must be the same tenant's integrations
/// whose connectors declare the operation).
pub async fn add_route(
    store: &Store,
    source: &switchyard_store::Integration,
    entity: &str,
    event: &str,
    filter: Value,
    channels: Vec<Channel>,
) -> Result<ChannelRoute, RouteError> {
    if !switchyard_core::is_valid_name(entity) {
        return Err(invalid("entity", "an entity name is a-z, 0-9, _ or -"));
    }
    if event != "*" && !switchyard_core::is_valid_name(event) {
        return Err(invalid("event", "an event name, or * for every event"));
    }
    RouteFilter::parse(&filter).map_err(|e| invalid("filter", e.to_string()))?;
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(invalid(
            "channels",
            format!("between 1 and {MAX_CHANNELS} channels, tried in order"),
        ));
    }
    for (n, c) in channels.iter().enumerate() {
        let at = |f: &str| format!("channels[{n}].{f}");
        let i = match store.integration(c.integration_id).await {
            Ok(i) if i.tenant == source.tenant => i,
            Ok(_) | Err(StoreError::NotFound(_)) => {
                return Err(invalid(
                    at("integration_id"),
                    format!(
                        "no integration {} of tenant {}",
                        c.integration_id, source.tenant
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let declares = switchyard_providers::kind(&i.provider)
            .ok()
            .and_then(|k| k.manifest(&i.settings))
            .and_then(|m| switchyard_providers::rest::Manifest::parse(&m).ok())
            .is_some_and(|m| m.operations.contains_key(&c.operation));
        if !declares {
            return Err(invalid(
                at("operation"),
                format!(
                    "`{}` ({}) has no operation `{}`",
                    i.name, i.provider, c.operation
                ),
            ));
        }
        c.input
            .validate()
            .map_err(|e| invalid(at(&format!("input.{}", e.field)), e.reason))?;
    }
    Ok(store
        .add_channel_route(&ChannelRoute {
            id: Uuid::now_v7(),
            tenant: source.tenant.clone(),
            source_integration_id: source.id,
            entity: entity.to_owned(),
            event: event.to_owned(),
            filter,
            channels: serde_json::to_value(&channels).unwrap_or_default(),
            created_at: Utc::now(),
        })
        .await?)
}

/// The channel routes that take an event (entity, event, filter).
pub fn matching<'r>(
    routes: &'r [ChannelRoute],
    entity: &str,
    event: &str,
    payload: &Value,
) -> Vec<&'r ChannelRoute> {
    routes
        .iter()
        .filter(|r| r.entity == entity && (r.event == "*" || r.event == event))
        .filter(|r| RouteFilter::parse(&r.filter).is_ok_and(|f| f.check(payload).is_ok()))
        .collect()
}

impl Calls {
    /// Move up to `limit` due messages on: send on the current channel (at most once), and
    /// on its outcome deliver, wait, or go on to the next channel. Returns how many
    /// messages ended (delivered or failed).
    pub async fn advance_messages(&self, limit: i64) -> Result<usize, StoreError> {
        let due = self
            .store
            .take_due_messages(limit, Duration::from_secs(60))
            .await?;
        let mut ended = 0;
        let mut unavailable = None;
        let results = crate::calls::at_most(crate::calls::AT_ONCE, due, |m| {
            let this = self.clone();
            async move { (m.id, this.advance(&m).await) }
        })
        .await;
        for (id, r) in results {
            match r {
                Ok(true) => ended += 1,
                Ok(false) => {}
                Err(e) if e.is_unavailable() => unavailable = Some(e),
                Err(e) => warn!(message = %id, error = %e, "could not move a message on"),
            }
        }
        match unavailable {
            Some(e) => Err(e),
            None => Ok(ended),
        }
    }

    /// One look at a message. `Ok(true)`: it ended.
    async fn advance(&self, m: &Message) -> Result<bool, StoreError> {
        let route = self.store.channel_route(m.route_id).await?;
        let channels: Vec<Channel> = serde_json::from_value(route.channels.clone())
            .map_err(|e| StoreError::Corrupt(format!("channel route {}: {e}", route.id)))?;
        let n = m.channel as usize;
        let Some(ch) = channels.get(n) else {
            self.store
                .move_message(m.id, "failed", m.channel, &m.outcomes, Utc::now())
                .await?;
            return Ok(true);
        };
        let key = format!("message:{}:{n}", m.id);
        debug_assert_eq!(message_of_key(&key), Some(m.id));
        let input = if ch.input.0.is_empty() {
            m.payload.clone()
        } else {
            ch.input.apply(&m.payload)
        };
        let ran = match self.store.integration(ch.integration_id).await {
            Ok(i) => {
                self.run(&i, &ch.operation, &input, Some(&key), CALL_DEADLINE)
                    .await
            }
            Err(StoreError::NotFound(_)) => Err(RunError::Unusable(format!(
                "integration {} no longer exists",
                ch.integration_id
            ))),
            Err(e) => return Err(e),
        };
        let now = Utc::now();
        let (status, error, call_id, wait) = match ran {
            Ok(r) => {
                let c = r.call;
                let wait = match c.status.as_str() {
                    // Look again when its result is due (a callback may come before).
                    "pending" => Some(c.query_at.map_or(now + ChronoDuration::seconds(60), |at| {
                        at + ChronoDuration::seconds(1)
                    })),
                    "running" => Some(now + ChronoDuration::seconds(1)),
                    _ => None,
                };
                let error = c
                    .error
                    .clone()
                    .or_else(|| c.result_message.clone().filter(|_| c.status != "succeeded"));
                (c.status, error, Some(c.id), wait)
            }
            // Not sent (the breaker, a rate limit): the same channel, later.
            Err(RunError::NotMade { retry_after, .. }) => {
                let at = now
                    + ChronoDuration::from_std(retry_after).unwrap_or(ChronoDuration::seconds(1));
                self.store
                    .move_message(m.id, "sending", m.channel, &m.outcomes, at)
                    .await?;
                return Ok(false);
            }
            Err(RunError::InProgress(_)) => {
                self.store
                    .move_message(
                        m.id,
                        "sending",
                        m.channel,
                        &m.outcomes,
                        now + ChronoDuration::seconds(1),
                    )
                    .await?;
                return Ok(false);
            }
            Err(RunError::Store(e)) => return Err(e),
            // The channel cannot send this (not active, no such operation, input missing):
            // it failed for good.
            Err(e) => ("failed".to_owned(), Some(e.to_string()), None, None),
        };
        if let Some(at) = wait {
            self.store
                .move_message(m.id, "sending", m.channel, &m.outcomes, at)
                .await?;
            return Ok(false);
        }
        let mut outcomes = m.outcomes.as_array().cloned().unwrap_or_default();
        outcomes.push(json!({
            "channel": n,
            "integration_id": ch.integration_id,
            "operation": ch.operation,
            "call_id": call_id,
            "status": status,
            "error": error,
        }));
        let outcomes = Value::Array(outcomes);
        if status == "succeeded" {
            info!(message = %m.id, channel = n, "message delivered");
            self.store
                .move_message(m.id, "delivered", m.channel, &outcomes, now)
                .await?;
            return Ok(true);
        }
        if n + 1 < channels.len() {
            info!(message = %m.id, channel = n, %status, "channel failed; trying the next");
            self.store
                .move_message(m.id, "sending", m.channel + 1, &outcomes, now)
                .await?;
            return Ok(false);
        }
        info!(message = %m.id, "every channel failed");
        self.store
            .move_message(m.id, "failed", m.channel, &outcomes, now)
            .await?;
        Ok(true)
    }
}
