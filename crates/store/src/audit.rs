//! The audit log (migration 0013): written by triggers on every change to integrations,
//! routes, API keys and dead-letter actions; read here, newest first.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{FromRow, Postgres, QueryBuilder};

use crate::{Result, Store};

/// One change: who, when, what (secrets only as `"changed"`).
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub tenant: Option<String>,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub changes: Value,
}

/// Which entries. Every field narrows the selection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditFilter {
    pub tenant: Option<String>,
    pub actor: Option<String>,
    /// `integration.update`, or a prefix ending in `.` (`integration.`).
    pub action: Option<String>,
    /// The changed thing's id (an integration, a route, an API key…).
    pub object: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Entries older than this one (the previous page's last id).
    pub before: Option<i64>,
}

impl Store {
    /// Audit entries that match, newest first, at most `limit` (≤ 1000).
    pub async fn audit(&self, f: &AuditFilter, limit: i64) -> Result<Vec<AuditEntry>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT id, at, actor, tenant, action, object_type, object_id, changes \
             FROM audit_log WHERE true",
        );
        if let Some(t) = &f.tenant {
            qb.push(" AND tenant = ").push_bind(t.clone());
        }
        if let Some(a) = &f.actor {
            qb.push(" AND actor = ").push_bind(a.clone());
        }
        match &f.action {
            Some(a) if a.ends_with('.') => {
                qb.push(" AND starts_with(action, ")
                    .push_bind(a.clone())
                    .push(")");
            }
            Some(a) => {
                qb.push(" AND action = ").push_bind(a.clone());
            }
            None => {}
        }
        if let Some(o) = &f.object {
            qb.push(" AND object_id = ").push_bind(o.clone());
        }
        if let Some(s) = f.since {
            qb.push(" AND at >= ").push_bind(s);
        }
        if let Some(u) = f.until {
            qb.push(" AND at < ").push_bind(u);
        }
        if let Some(b) = f.before {
            qb.push(" AND id < ").push_bind(b);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit.clamp(1, 1000));
        Ok(qb.build_query_as().fetch_all(self.pool()).await?)
    }
}
