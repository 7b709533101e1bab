//! Operator actions over the broker and the database: inspecting, replaying and purging
//! dead letters. Used by the CLI (`switchyard dlq …`) and the HTTP API (`/v1/dlq`).
#![forbid(unsafe_code)]

pub mod dlq;
