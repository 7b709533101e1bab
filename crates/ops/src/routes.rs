//! Routes: which events from a source go to which targets, with a filter and options. The
//! CLI and the HTTP API both add routes through [`add`], so both check the same things.
use serde_json::Value;
use switchyard_core::{RouteFilter, RouteOptions};
use switchyard_store::{Integration, NewRoute, Store, StoreError};
use uuid::Uuid;

use crate::integrations::FieldError;

/// A route to add: `targets` get `source`'s `entity` events named `event` (`*`: every
/// event) that pass `filter`. Adding to an existing (source, entity, event) adds targets
/// and sets the filter and options.
#[derive(Debug, Clone)]
pub struct RouteRequest<'a> {
    pub source: &'a Integration,
    pub entity: &'a str,
    pub event: &'a str,
    pub targets: &'a [Integration],
    pub filter: &'a Value,
    pub options: RouteOptions,
}

fn err(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Check a route before storing it; errors name the field (`targets[1]`, `filter`, …).
pub fn validate(r: &RouteRequest<'_>) -> Result<(), FieldError> {
    if !switchyard_core::is_valid_name(r.entity) {
        return Err(err(
            "entity",
            format!(
                "`{}` is not a valid entity name (a-z, 0-9, _ or -)",
                r.entity
            ),
        ));
    }
    if r.event != "*" && !switchyard_core::is_valid_name(r.event) {
        return Err(err(
            "event",
            format!(
                "`{}` is not an event name (a-z, 0-9, _ or -) or `*`",
                r.event
            ),
        ));
    }
    if r.targets.is_empty() {
        return Err(err("targets", "name at least one target"));
    }
    RouteFilter::parse(r.filter).map_err(|e| err("filter", e.to_string()))?;
    for (n, t) in r.targets.iter().enumerate() {
        let at = format!("targets[{n}]");
        if t.tenant != r.source.tenant {
            return Err(err(
                &at,
                format!(
                    "`{}` belongs to tenant `{}`, the source to `{}`; routes stay within a tenant",
                    t.name, t.tenant, r.source.tenant
                ),
            ));
        }
        if t.id == r.source.id {
            return Err(err(
                &at,
                "a route cannot send an integration's events back to itself",
            ));
        }
        if !switchyard_providers::info(&t.provider).is_some_and(|i| i.is_target) {
            return Err(err(
                &at,
                format!("a `{}` integration cannot be a target", t.provider),
            ));
        }
        if let Some(m) = switchyard_providers::manifest(&t.provider, &t.settings) {
            let e = m.pointer(&format!("/entities/{}", r.entity));
            let where_ = if t.provider == switchyard_providers::rest::PROVIDER {
                format!(" (settings.entities.{})", r.entity)
            } else {
                format!(" (`switchyard connectors show {}` lists them)", t.provider)
            };
            if e.is_none() {
                return Err(err(
                    &at,
                    format!(
                        "`{}` has no endpoints for entity `{}`{where_}",
                        t.name, r.entity
                    ),
                ));
            }
            if r.options.link_existing && e.and_then(|e| e.get("lookup")).is_none() {
                return Err(err(
                    "link_existing",
                    format!(
                        "`{}` cannot look {} records up: its manifest has no `lookup` for them{where_}",
                        t.name, r.entity
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What went wrong adding a route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a two-way pair of routes lacks to tell an echo from a change: each side must report
/// the version of what the hub wrote (its manifest's `version_pointer` for the entity) and
/// send it with its events (its inbound spec's `version`).
pub fn two_way_warnings(a: &Integration, b: &Integration, entity: &str) -> Vec<String> {
    let mut out = Vec::new();
    for i in [a, b] {
        let reports = i
            .settings
            .pointer(&format!("/entities/{entity}/version_pointer"))
            .is_some();
        let sends = i.inbound.get("version").is_some();
        if !(reports && sends) {
            out.push(format!(
                "`{}` and `{}` now sync {entity} both ways, but `{}` {}: without versions on both sides the hub cannot tell its own writes coming back from real changes (see README, Records, sources and targets)",
                a.name,
                b.name,
                i.name,
                match (reports, sends) {
                    (false, false) => format!("has no settings.entities.{entity}.version_pointer and no inbound version"),
                    (false, true) => format!("has no settings.entities.{entity}.version_pointer"),
                    _ => "has no inbound version".to_owned(),
                }
            ));
        }
    }
    out
}

/// Validate and store a route; returns its id and warnings for the operator (a two-way pair
/// that cannot recognise echoes).
pub async fn add_checked(
    store: &Store,
    r: &RouteRequest<'_>,
) -> Result<(Uuid, Vec<String>), RouteError> {
    let id = add(store, r).await?;
    let mut warnings = Vec::new();
    for t in r.targets {
        let back = store.route_targets(t.id).await?;
        if back
            .iter()
            .any(|b| b.entity == r.entity && b.target_id == r.source.id)
        {
            warnings.extend(two_way_warnings(r.source, t, r.entity));
        }
    }
    Ok((id, warnings))
}

/// Validate and store a route; returns its id.
pub async fn add(store: &Store, r: &RouteRequest<'_>) -> Result<Uuid, RouteError> {
    validate(r)?;
    let ids: Vec<Uuid> = r.targets.iter().map(|t| t.id).collect();
    Ok(store
        .add_route(&NewRoute {
            source: r.source.id,
            entity: r.entity,
            event: r.event,
            targets: &ids,
            filter: r.filter,
            options: &r.options,
        })
        .await?)
}

/// Remove a route and all its targets; jobs already made go on.
pub async fn remove(store: &Store, route: Uuid) -> Result<(), StoreError> {
    store.remove_route(route).await
}

/// Remove one target of a route; `true` when it was the last, and the route went with it.
pub async fn remove_target(store: &Store, route: Uuid, target: Uuid) -> Result<bool, StoreError> {
    store.remove_route_target(route, target).await
}
