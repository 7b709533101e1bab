//! Operator actions over the broker and the database: inspecting, replaying and purging
//! dead letters; re-encrypting secrets under a new vault key; starting batch syncs. Used by the CLI (`switchyard dlq …`) and the HTTP API (`/v1/dlq`).
#![forbid(unsafe_code)]

pub mod api_keys;
pub mod calls;
pub mod deliver;
pub mod dlq;
pub mod held;
pub mod integrations;
pub mod keys;
pub mod messages;
pub mod notify;
pub mod oauth;
pub mod routes;
pub mod sync;
